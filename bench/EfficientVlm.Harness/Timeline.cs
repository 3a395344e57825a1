using System.Collections.Concurrent;
using System.Diagnostics;
using EfficientVlm.Common;

namespace EfficientVlm.Harness;

/// <summary>One finished call: when it began and ended (seconds since the run's start) and whether it succeeded.</summary>
public readonly record struct Call(double Begun, double Ended, bool Ok)
{
    public double Milliseconds => (Ended - Begun) * 1000;
}

/// <summary>Something the scenario did or saw, at a time (seconds since the run's start).</summary>
public sealed record Event(double At, string What);

/// <summary>A stretch of the run that is summarised on its own (for example "1 GPU silo").</summary>
public sealed record Window(string Name, double From, double To);

/// <summary>A window's measurements.</summary>
public sealed record WindowStats(Window Window, long Calls, long Errors, double PerSecond, double P50, double P99);

/// <summary>One second of the run: calls ended in it, errors, latency percentiles, and what the cluster looked like.</summary>
public sealed record Second(int At, long Calls, long Errors, double P50, double P99, string Silos, int Replicas);

/// <summary>What a harness run records: every call, events, per-second samples of the cluster, and windows.</summary>
public sealed class Timeline
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly ConcurrentQueue<Call> _calls = new();
    private readonly ConcurrentQueue<Event> _events = new();
    private readonly ConcurrentDictionary<int, (string Silos, int Replicas)> _samples = new();
    private readonly List<Window> _windows = [];
    private readonly ConcurrentDictionary<string, int> _errorKinds = new();

    public double Now => _clock.Elapsed.TotalSeconds;

    public void Record(Call call) => _calls.Enqueue(call);

    public void RecordError(Exception e) => _errorKinds.AddOrUpdate($"{e.GetType().Name}: {First(e.Message, 160)}", 1, (_, n) => n + 1);

    public Event Mark(string what)
    {
        var e = new Event(Now, what);
        _events.Enqueue(e);
        return e;
    }

    public void Sample(string silos, int replicas) => _samples[(int)Now] = (silos, replicas);

    public void AddWindow(string name, double from, double to)
    {
        if (to > from) _windows.Add(new Window(name, from, to));
    }

    public IReadOnlyList<Event> Events => _events.ToList();
    public IReadOnlyList<Window> Windows => _windows;
    public IReadOnlyDictionary<string, int> ErrorKinds => _errorKinds;
    public IReadOnlyList<Call> Calls => _calls.ToList();

    public WindowStats Stats(Window window)
    {
        var inside = _calls.Where(c => c.Ended >= window.From && c.Ended < window.To).ToList();
        var ok = inside.Where(c => c.Ok).Select(c => c.Milliseconds).Order().ToList();
        return new WindowStats(window, ok.Count, inside.Count - ok.Count, ok.Count / (window.To - window.From), Quantiles.NearestRank(ok, 0.5), Quantiles.NearestRank(ok, 0.99));
    }

    /// <summary>The longest successful call that was in flight at <paramref name="at"/> (how long callers waited across an event), ms.</summary>
    public double LongestAcross(double at) =>
        _calls.Where(c => c.Ok && c.Begun <= at && c.Ended >= at).Select(c => c.Milliseconds).DefaultIfEmpty(0).Max();

    /// <summary>The longest call (successful or not) that began in [<paramref name="from"/>, <paramref name="to"/>), ms.</summary>
    public double LongestBegun(double from, double to) =>
        _calls.Where(c => c.Begun >= from && c.Begun < to).Select(c => c.Milliseconds).DefaultIfEmpty(0).Max();

    /// <summary>Seconds from <paramref name="after"/> until a whole second in which at least <paramref name="rate"/> calls succeeded; null if none.</summary>
    public double? Recovery(double after, double rate) =>
        Seconds(Now).Where(s => s.At >= Math.Ceiling(after) && s.Calls >= rate).Select(s => s.At - after).Cast<double?>().FirstOrDefault();

    public IReadOnlyList<Second> Seconds(double until)
    {
        var bySecond = _calls.GroupBy(c => (int)c.Ended).ToDictionary(g => g.Key, g => g.ToList());
        var seconds = new List<Second>();
        (string Silos, int Replicas) last = ("", 0);
        for (int s = 0; s < (int)Math.Floor(until); s++) // whole seconds only
        {
            var calls = bySecond.GetValueOrDefault(s) ?? [];
            var ok = calls.Where(c => c.Ok).Select(c => c.Milliseconds).Order().ToList();
            if (_samples.TryGetValue(s, out var sample)) last = sample;
            seconds.Add(new Second(s, ok.Count, calls.Count - ok.Count, Quantiles.NearestRank(ok, 0.5), Quantiles.NearestRank(ok, 0.99), last.Silos, last.Replicas));
        }
        return seconds;
    }

    private static string First(string text, int length) => text.Length <= length ? text : text[..length] + "...";
}
