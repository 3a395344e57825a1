using System.CommandLine;
using EfficientVlm.Client;
using EfficientVlm.Grains.Abstractions;
using Spectre.Console;

namespace EfficientVlm.Cli;

internal static class ModelsCommand
{
    public static Command Create()
    {
        var models = new Command("models", "Task-agnostic compact models known to the fleet.");

        var list = new Command("list", "List the compact models.");
        list.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var table = new Table().AddColumns("id", "preset", "status", "student", "teacher", "registered (UTC)");
            foreach (var m in await client.ListCompactModelsAsync(ct))
                table.AddRow(m.Id, m.Preset, Views.Status(m.Status.ToString(), m.Error), Views.Short(m.Student), Views.Short(m.Teacher),
                    m.RegisteredAt.UtcDateTime.ToString("u"));
            AnsiConsole.Write(table);
        }));

        var showId = new Argument<string>("id");
        var show = new Command("show", "Show a compact model and its distillation job.") { showId };
        show.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var m = await client.GetCompactModelAsync(parse.GetValue(showId)!, ct) ?? throw new ArgumentException($"No compact model '{parse.GetValue(showId)}'.");
            Views.Write(m);
        }));

        var id = new Option<string>("--id") { Description = "model id (lower-case letters, digits, . _ -)", Required = true };
        var preset = new Option<string>("--preset") { Description = "student preset", DefaultValueFactory = _ => "demo" };
        var teacher = new Option<string>("--teacher") { Description = "pre-trained teacher: checkpoint folder (uploaded) or model hash", Required = true };
        var student = new Option<string?>("--student") { Description = "distilled student: checkpoint folder or model hash (omit to distil it in the fleet)" };
        var dataset = new Option<string?>("--dataset") { Description = "dataset hash to distil on (fleet data upload)" };
        var taskTeachers = new Option<string[]>("--task-teacher")
        {
            Description = "TASK=FOLDER|HASH: a teacher already fine-tuned for a task (e.g. vqa=models/shapesworld/vqa); its variants " +
                          "are pruned with KD from it and skip fine-tuning the teacher (repeatable)",
            AllowMultipleArgumentsPerToken = false,
        };
        var watch = new Option<bool>("--watch") { Description = "follow the distillation until it ends" };
        var jobs = new JobOptions();
        var create = new Command("create", "Register a compact model; without --student, distil it from the teacher as a fleet job (idempotent by id).")
        {
            id, preset, teacher, student, dataset, taskTeachers, watch,
        };
        create.Aliases.Add("register");
        jobs.AddTo(create);
        create.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var teacherHash = await ModelHash(client, parse.GetValue(teacher)!, ct);
            var studentHash = parse.GetValue(student) is { } s ? await ModelHash(client, s, ct) : null;
            var perTask = new Dictionary<FleetTask, string>();
            foreach (var pair in parse.GetValue(taskTeachers) ?? [])
            {
                var at = pair.IndexOf('=');
                if (at <= 0) throw new ArgumentException($"--task-teacher '{pair}' is not TASK=FOLDER|HASH.");
                var task = VariantSpec.ParseTask(pair[..at]);
                if (!perTask.TryAdd(task, await ModelHash(client, pair[(at + 1)..], ct)))
                    throw new ArgumentException($"--task-teacher names {pair[..at]} twice.");
            }
            var m = await client.RegisterCompactModelAsync(new CompactModelRegistration(parse.GetValue(id)!, parse.GetValue(preset)!, teacherHash,
                studentHash, parse.GetValue(dataset), jobs.From(parse), perTask.Count == 0 ? null : perTask), ct);
            AnsiConsole.MarkupLineInterpolated($"compact model [green]{m.Id}[/] ({m.Preset}): {m.Status}");
            if (parse.GetValue(watch) && m.Status == CompactModelStatus.Distilling)
            {
                m = await Views.FollowAsync(ct, async () => await client.GetCompactModelAsync(m.Id, ct) ?? m,
                    x => x.Status != CompactModelStatus.Distilling, x => x.Progress, x => "Distill");
                Views.Write(m);
                if (m.Status == CompactModelStatus.Failed) throw new ArgumentException($"distillation failed: {m.Error}");
            }
        }));

        var remove = CliConnection.RemoveCommand("compact model", "Remove a compact model that no variant is made from, distilling or not " +
            "(its job stops, its state goes; the models it stored stay).", (client, id, ct) => client.RemoveCompactModelAsync(id, ct));

        models.Subcommands.Add(list);
        models.Subcommands.Add(show);
        models.Subcommands.Add(create);
        models.Subcommands.Add(remove);
        return models;
    }

    /// <summary>A checkpoint folder is uploaded; anything else must be a model hash.</summary>
    internal static async Task<string> ModelHash(FleetClient client, string folderOrHash, CancellationToken ct)
    {
        if (Directory.Exists(folderOrHash)) return await client.UploadModelAsync(folderOrHash, ct);
        Identifiers.ValidateHash(folderOrHash, "model (neither a folder nor a hash)");
        return folderOrHash;
    }
}
