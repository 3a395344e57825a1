using System.Diagnostics;
using EfficientVlm.Common;
using EfficientVlm.Model.Modules;
using Spectre.Console;
using TorchSharp;

namespace EfficientVlm.Bench;

/// <summary>
/// The conv stem's forward time at several inner widths, side by side and interleaved (inference, random weights and
/// images: the time does not depend on their values). The go / no-go check of docs/stem-pruning-plan.md: does the
/// stem's batch-1 time fall with its channels (so that pruning them can lift the NLVR2 variant's speed-up), and do
/// widths that are not multiples of 8 cost extra?
/// </summary>
public static class StemWidthBench
{
    public static int Run(string[] args)
    {
        int threads = Args.Int(args, "--threads", 1);
        int batch = Args.Int(args, "--batch", 2);   // one NLVR2 pair
        int repeats = Args.Int(args, "--repeats", 300);
        int hidden = Args.Int(args, "--hidden", 128), patch = Args.Int(args, "--patch", 8), size = Args.Int(args, "--image", 64);
        var configs = (Args.String(args, "--widths") ?? "16-32-64,12-24-48,8-16-32,9-21-37,8-16-40,16-16-32")
            .Split(',').Select(c => c.Split('-').Select(int.Parse).ToArray()).ToList();
        torch.set_num_threads(threads);
        torch.manual_seed(0);

        var stems = configs.Select(w => new ConvStem("stem", hidden, patch, null, w)).ToList();
        foreach (var stem in stems) stem.eval();
        var times = stems.Select(_ => new List<double>()).ToArray();
        using (torch.no_grad())
        using (var images = torch.randn(batch, 3, size, size))
        {
            for (int i = -20; i < repeats; i++)
                for (int s = 0; s < stems.Count; s++)
                {
                    using var scope = torch.NewDisposeScope();
                    var clock = Stopwatch.StartNew();
                    stems[s].Forward(images);
                    if (i >= 0) times[s].Add(clock.Elapsed.TotalMilliseconds);
                }
        }

        var table = new Table().AddColumns("inner widths", "multiply-adds / image", "vs first", "median ms", "p10 ms", "p90 ms", "time vs first");
        double firstMacs = MultiplyAdds(configs[0], hidden, size), firstTime = Quantiles.Median(times[0]);
        for (int s = 0; s < stems.Count; s++)
        {
            double macs = MultiplyAdds(configs[s], hidden, size), median = Quantiles.Median(times[s]);
            var sorted = times[s].Order().ToList();
            table.AddRow(string.Join(" / ", configs[s]), $"{macs:N0}", $"{macs / firstMacs:0.00}", $"{median:0.000}",
                $"{Quantiles.NearestRank(sorted, 0.1):0.000}", $"{Quantiles.NearestRank(sorted, 0.9):0.000}", $"{median / firstTime:0.00}");
        }
        AnsiConsole.MarkupLine($"[bold]Conv stem forward[/] (inference, batch {batch}, {size} px, patch {patch}, last width {hidden}; {repeats} calls each, interleaved)");
        AnsiConsole.MarkupLine(BenchMachine.Describe(threads));
        AnsiConsole.Write(table);
        foreach (var stem in stems) stem.Dispose();
        return 0;
    }

    /// <summary>Multiply-adds of one image through the stem: 3x3 kernels, the first at full size, each next one halving it.</summary>
    public static double MultiplyAdds(IReadOnlyList<int> inner, int hidden, int size)
    {
        int[] widths = [3, .. inner, hidden];
        double total = 0;
        for (int i = 1; i < widths.Length; i++)
        {
            int side = i == 1 ? size : size >> (i - 1);
            total += (double)side * side * widths[i] * widths[i - 1] * 9;
        }
        return total;
    }
}
