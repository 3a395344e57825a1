using System.CommandLine;
using EfficientVlm.Model.Checkpoints;
using EfficientVlm.Model.Training;
using Spectre.Console;

namespace EfficientVlm.Tool;

/// <summary><c>vlm probe</c>: linear probes for where a checkpoint loses the position of objects (ShapesWorld).</summary>
internal static class ProbeCommand
{
    public static Command Create()
    {
        var model = new Option<DirectoryInfo>("--model") { Description = "checkpoint folder (any task)", Required = true };
        var data = new Option<DirectoryInfo>("--data") { Description = "ShapesWorld data folder", Required = true };
        var train = new Option<int>("--train") { Description = "\"where\" questions from train to fit the probes on", DefaultValueFactory = _ => 1500 };
        var test = new Option<int>("--test") { Description = "\"where\" questions from test to score them on", DefaultValueFactory = _ => 300 };
        train.AtLeastOne();
        test.AtLeastOne();
        var command = new Command("probe",
            "Linear probes for the 3 x 3 cell of objects (in the vision tokens, in the tokens of object patches, in the fused \"where\" questions) " +
            "and the share of cross-attention on the asked-about object.")
            { model, data, train, test, Torch.Threads };
        command.SetAction(async (parse, ct) =>
        {
            using var executor = Torch.Executor(parse);
            try
            {
                var report = await executor.RunAsync(ctx =>
                {
                    using var m = Checkpoint.Load(parse.GetValue(model)!.FullName, ctx.Device);
                    m.eval();
                    var taskData = new TaskData(parse.GetValue(data)!.FullName, m.Config);
                    return PositionProbe.Run(m, taskData, parse.GetValue(train), parse.GetValue(test), ctx.Device);
                });
                var table = new Table().AddColumns("probe", "n (test)", "accuracy", "majority class");
                foreach (var s in report.Probes) table.AddRow(s.Features, $"{s.Count}", $"{s.Accuracy:0.0}", $"{s.Majority:0.0}");
                AnsiConsole.MarkupLineInterpolated($"[bold]position probes[/] of {parse.GetValue(model)!.FullName}");
                AnsiConsole.Write(table);
                var attention = new Table().AddColumns("fusion layer", "asked-about object %", "any object %", "class token %");
                foreach (var a in report.Attention) attention.AddRow($"{a.Layer}", $"{a.Target:0.0}", $"{a.Objects:0.0}", $"{a.ClassToken:0.0}");
                if (report.Attention.FirstOrDefault() is { } u)
                    attention.AddRow("(uniform attention)", $"{u.UniformTarget:0.0}", $"{u.UniformObjects:0.0}", $"{u.UniformClassToken:0.0}");
                AnsiConsole.MarkupLine("[bold]cross-attention of the test \"where\" questions[/] (mean over heads and question tokens)");
                AnsiConsole.Write(attention);
                return 0;
            }
            catch (Exception e) when (UserErrors.Is(e))
            {
                return UserErrors.Report(e);
            }
        });
        return command;
    }
}
