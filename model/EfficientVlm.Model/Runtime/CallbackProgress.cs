namespace EfficientVlm.Model.Runtime;

/// <summary>Reports on the reporting thread at once (Progress&lt;T&gt; posts to a synchronisation context: a console app does not pump one, and a grain needs the report in its own turn).</summary>
public sealed class CallbackProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
