using System.CommandLine;
using EfficientVlm.Grains.Abstractions;
using Spectre.Console;

namespace EfficientVlm.Cli;

internal static class VariantsCommand
{
    public static Command Create()
    {
        var variants = new Command("variants", "Task variants: fine-tuned, pruned and shrunk copies of a compact model.");

        var task = new Option<string>("--task") { Description = "vqa | nlvr2 | retrieval | captioning", Required = true };
        var model = new Option<string>("--model") { Description = "compact model id", Required = true };
        var target = new Option<double?>("--target") { Description = "global target sparsity (paper: 0.35 VQA, 0.25 the others)" };
        var dataset = new Option<string>("--dataset") { Description = "dataset hash (fleet data list)", Required = true };
        var watch = new Option<bool>("--watch") { Description = "follow the variant until it is ready or failed" };
        var jobs = new JobOptions();
        var create = new Command("create", "Get the variant for (task, model, target, dataset): the existing one, or a new one started on a GPU silo.")
        {
            task, model, target, dataset, watch,
        };
        jobs.AddTo(create);
        create.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var which = VariantSpec.ParseTask(parse.GetValue(task));
            var spec = new VariantSpec(which, parse.GetValue(model)!, parse.GetValue(target) ?? VariantSpec.DefaultTargetSparsity(which),
                parse.GetValue(dataset)!);
            VariantInfo info;
            try
            {
                info = await client.EnsureVariantAsync(spec, jobs.GivenOrNull(parse), ct);
            }
            catch (NoGpuSiloException e)
            {
                AnsiConsole.MarkupLineInterpolated($"[yellow]variant {spec.VariantId} is waiting:[/] {e.Message}");
                if (!parse.GetValue(watch)) return;
                info = await client.GetVariantAsync(spec.VariantId, ct) ?? throw new UnknownVariantException($"No variant '{spec.VariantId}'.");
            }
            AnsiConsole.MarkupLineInterpolated($"variant [green]{info.Id}[/]: {info.Stage}");
            if (parse.GetValue(watch)) await WatchAsync(client, info.Id, ct);
        }));

        var list = new Command("list", "List the variants.");
        list.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var table = new Table().AddColumns("id", "task", "stage", "progress", "score", "teacher", "params", "speed-up b1/b32", "updated (UTC)");
            foreach (var v in await client.ListVariantsAsync(ct))
            {
                var m = v.Metrics;
                table.AddRow(v.Id, v.Spec.Task.ToString(), Views.Status(v.Stage.ToString(), v.Error), Views.Progress(v.Progress),
                    m is null ? "-" : $"{m.Metric} {m.Score:0.0}", m is null ? "-" : $"{m.TeacherScore:0.0}",
                    m is null ? "-" : $"{m.Parameters:N0}", m is null ? "-" : $"{m.SpeedUpBatch1:0.00}x / {m.SpeedUpBatch32:0.00}x",
                    v.UpdatedAt.UtcDateTime.ToString("u"));
            }
            AnsiConsole.Write(table);
        }));

        var id = new Argument<string>("id");
        var show = new Command("show", "Show a variant: stage, progress, history, metrics.") { id };
        show.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
            Views.Write(await client.GetVariantAsync(parse.GetValue(id)!, ct) ?? throw new UnknownVariantException($"No variant '{parse.GetValue(id)}'."))));

        var watchId = new Argument<string>("id");
        var watchCommand = new Command("watch", "Follow a variant until it is ready or failed (progress bar), then show it.") { watchId };
        watchCommand.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, client => WatchAsync(client, parse.GetValue(watchId)!, ct)));

        var remove = CliConnection.RemoveCommand("variant", "Remove a variant, running or not: its job stops, its replicas retire, its state " +
            "goes (the models it stored stay). Asking for its spec again makes it anew.", (client, id, ct) => client.RemoveVariantAsync(id, ct));

        variants.Subcommands.Add(create);
        variants.Subcommands.Add(list);
        variants.Subcommands.Add(show);
        variants.Subcommands.Add(watchCommand);
        variants.Subcommands.Add(remove);
        return variants;
    }

    private static async Task WatchAsync(EfficientVlm.Client.FleetClient client, string id, CancellationToken ct)
    {
        var info = await Views.FollowAsync(ct, async () => await client.GetVariantAsync(id, ct) ?? throw new UnknownVariantException($"No variant '{id}'."),
            v => v.IsTerminal, v => v.Progress, v => v.Stage.ToString());
        Views.Write(info);
        if (info.Stage == VariantStage.Failed) throw new ArgumentException($"variant {id} failed: {info.Error}");
    }

}
