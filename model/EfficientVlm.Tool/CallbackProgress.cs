namespace EfficientVlm.Tool;

/// <summary>Reports on the reporting thread at once (Progress&lt;T&gt; posts to a synchronisation context that a console app does not pump).</summary>
internal sealed class CallbackProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
