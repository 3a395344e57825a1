using System.Globalization;
using System.Text;
using EfficientVlm.Common;

namespace EfficientVlm.Harness;

/// <summary>Writes a harness run as CSV (per second), Markdown (findings, windows, events, 5-second table) and an SVG plot.</summary>
public static class Report
{
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static IReadOnlyList<WindowStats> Windows(Timeline timeline) => timeline.Windows.Select(timeline.Stats).ToList();

    public static void WriteCsv(string path, IReadOnlyList<Second> seconds) =>
        File.WriteAllLines(path, ["second,calls,errors,p50_ms,p99_ms,replicas,placement",
            .. seconds.Select(s => string.Create(Invariant, $"{s.At},{s.Calls},{s.Errors},{s.P50:0.0},{s.P99:0.0},{s.Replicas},{s.Silos}"))]);

    public static string Markdown(string header, Timeline timeline, IReadOnlyList<(string Measure, string Value)> findings, IReadOnlyList<Second> seconds)
    {
        var md = new StringBuilder();
        md.AppendLine(header).AppendLine();
        md.AppendLine("| measure | value |").AppendLine("|---|---|");
        foreach (var (measure, value) in findings) md.AppendLine($"| {measure} | {value} |");
        md.AppendLine().AppendLine("| window | from s | to s | calls | failed | calls/s | p50 ms | p99 ms |").AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var w in Windows(timeline))
            md.AppendLine(string.Create(Invariant,
                $"| {w.Window.Name} | {w.Window.From:0.0} | {w.Window.To:0.0} | {w.Calls} | {w.Errors} | {w.PerSecond:0.0} | {w.P50:0} | {w.P99:0} |"));
        md.AppendLine().AppendLine("| t (s) | event |").AppendLine("|---|---|");
        foreach (var e in timeline.Events) md.AppendLine(string.Create(Invariant, $"| {e.At:0.0} | {e.What} |"));
        if (timeline.ErrorKinds.Count > 0)
        {
            md.AppendLine().AppendLine("| failed calls | count |").AppendLine("|---|---|");
            foreach (var (kind, count) in timeline.ErrorKinds.OrderByDescending(k => k.Value)) md.AppendLine($"| {kind.Replace("|", "/")} | {count} |");
        }
        md.AppendLine().AppendLine("| t (s) | calls/s | failed | p50 ms | p99 ms | replicas |").AppendLine("|---|---|---|---|---|---|");
        foreach (var chunk in seconds.Chunk(5))
        {
            var calls = chunk.Sum(s => s.Calls);
            md.AppendLine(string.Create(Invariant,
                $"| {chunk[0].At}-{chunk[^1].At + 1} | {calls / (double)chunk.Length:0.0} | {chunk.Sum(s => s.Errors)} | " +
                $"{Quantiles.Median(chunk.Select(s => s.P50)):0} | {chunk.Select(s => s.P99).Where(double.IsFinite).DefaultIfEmpty(double.NaN).Max():0} | {chunk[^1].Silos} |"));
        }
        return md.ToString();
    }

    /// <summary>Calls/s per second (left axis), p99 latency per second (right axis), failed calls, events and windows.</summary>
    public static string Svg(string title, Timeline timeline, IReadOnlyList<Second> seconds)
    {
        const double width = 1000, height = 440, left = 60, right = 70, top = 40, bottom = 50;
        double plotW = width - left - right, plotH = height - top - bottom;
        double duration = Math.Max(1, seconds.Count);
        double maxRate = Math.Max(10, seconds.Max(s => (double)s.Calls) * 1.15);
        double maxP99 = Math.Max(100, seconds.Select(s => s.P99).Where(double.IsFinite).DefaultIfEmpty(100).Max() * 1.15);
        string X(double t) => (left + t / duration * plotW).ToString("0.0", Invariant);
        string YRate(double v) => (top + plotH - v / maxRate * plotH).ToString("0.0", Invariant);
        string YP99(double v) => (top + plotH - Math.Min(v, maxP99) / maxP99 * plotH).ToString("0.0", Invariant);
        string Esc(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");

        var svg = new StringBuilder();
        svg.AppendLine(string.Create(Invariant,
            $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">"));
        svg.AppendLine($"<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        svg.AppendLine(string.Create(Invariant, $"<text x=\"{left}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{Esc(title)}</text>"));
        // measurement windows, shaded, with their rate
        foreach (var w in Windows(timeline))
        {
            svg.AppendLine(string.Create(Invariant,
                $"<rect x=\"{X(w.Window.From)}\" y=\"{top}\" width=\"{(w.Window.To - w.Window.From) / duration * plotW:0.0}\" height=\"{plotH}\" fill=\"#e8f0fe\"/>"));
            svg.AppendLine(string.Create(Invariant,
                $"<text x=\"{X(w.Window.From + 1)}\" y=\"{top + plotH - 6}\" fill=\"#1a4fa0\">{Esc(w.Window.Name)}: {w.PerSecond:0}/s</text>"));
        }
        // axes and grid
        for (int i = 0; i <= 5; i++)
        {
            double rate = maxRate * i / 5, p99 = maxP99 * i / 5;
            svg.AppendLine(string.Create(Invariant,
                $"<line x1=\"{left}\" x2=\"{left + plotW}\" y1=\"{YRate(rate)}\" y2=\"{YRate(rate)}\" stroke=\"#ddd\"/>" +
                $"<text x=\"{left - 6}\" y=\"{YRate(rate)}\" text-anchor=\"end\" dominant-baseline=\"middle\">{rate:0}</text>" +
                $"<text x=\"{left + plotW + 6}\" y=\"{YP99(p99)}\" dominant-baseline=\"middle\" fill=\"#c05000\">{p99:0}</text>"));
        }
        int step = duration > 240 ? 60 : duration > 60 ? 20 : 10;
        for (int t = 0; t <= duration; t += step)
            svg.AppendLine(string.Create(Invariant, $"<text x=\"{X(t)}\" y=\"{top + plotH + 16}\" text-anchor=\"middle\">{t}</text>"));
        svg.AppendLine(string.Create(Invariant,
            $"<rect x=\"{left}\" y=\"{top}\" width=\"{plotW}\" height=\"{plotH}\" fill=\"none\" stroke=\"#333\"/>" +
            $"<text x=\"{left + plotW - 4}\" y=\"{height - 10}\" text-anchor=\"end\">time (s)</text>" +
            $"<text x=\"14\" y=\"{top + plotH / 2}\" transform=\"rotate(-90 14 {top + plotH / 2})\" text-anchor=\"middle\" fill=\"#1a4fa0\">calls/s</text>" +
            $"<text x=\"{width - 14}\" y=\"{top + plotH / 2}\" transform=\"rotate(90 {width - 14} {top + plotH / 2})\" text-anchor=\"middle\" fill=\"#c05000\">p99 latency (ms)</text>"));
        // events
        foreach (var e in timeline.Events)
            svg.AppendLine(string.Create(Invariant,
                $"<line x1=\"{X(e.At)}\" x2=\"{X(e.At)}\" y1=\"{top}\" y2=\"{top + plotH}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>" +
                $"<text x=\"{X(e.At)}\" y=\"{top + 4}\" transform=\"rotate(90 {X(e.At)} {top + 4})\" fill=\"#555\" font-size=\"10\">{Esc(e.What)}</text>"));
        // series
        // calls end in batches, so one second holds a whole number of batches: plot the centred 3 s mean
        double Smoothed(int i) => seconds.Skip(Math.Max(0, i - 1)).Take(i == 0 ? 2 : 3).Average(s => (double)s.Calls);
        svg.AppendLine("<polyline fill=\"none\" stroke=\"#1a4fa0\" stroke-width=\"1.6\" points=\"" +
                       string.Join(" ", seconds.Select((s, i) => $"{X(s.At + 0.5)},{YRate(Smoothed(i))}")) + "\"/>");
        svg.AppendLine("<polyline fill=\"none\" stroke=\"#c05000\" stroke-width=\"1\" points=\"" +
                       string.Join(" ", seconds.Where(s => double.IsFinite(s.P99)).Select(s => $"{X(s.At + 0.5)},{YP99(s.P99)}")) + "\"/>");
        foreach (var s in seconds.Where(s => s.Errors > 0))
            svg.AppendLine(string.Create(Invariant, $"<circle cx=\"{X(s.At + 0.5)}\" cy=\"{top + plotH - 14}\" r=\"4\" fill=\"red\"><title>{s.Errors} failed</title></circle>"));
        svg.AppendLine(string.Create(Invariant, $"<text x=\"{left}\" y=\"{height - 10}\">") +
            "<tspan fill=\"#1a4fa0\">calls/s (3 s mean)</tspan>  <tspan fill=\"#c05000\">p99 latency per second</tspan>  " +
            "<tspan fill=\"red\">● seconds with failed calls</tspan></text>");
        svg.AppendLine("</svg>");
        return svg.ToString();
    }
}
