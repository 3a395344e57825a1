using System.CommandLine;
using Spectre.Console;

namespace EfficientVlm.Cli;

internal static class DataCommand
{
    public static Command Create()
    {
        var data = new Command("data", "Datasets in the fleet's artefact store.");

        var folder = new Argument<DirectoryInfo>("folder") { Description = "data folder written by `vlm data generate`" };
        var name = new Option<string>("--name") { Description = "a name for people (the hash identifies it)", DefaultValueFactory = _ => "shapesworld" };
        var upload = new Command("upload", "Upload a data folder (content-addressed: the same content is stored once) and register it.") { folder, name };
        upload.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var info = await AnsiConsole.Status().StartAsync("uploading...", _ =>
                client.UploadDatasetAsync(parse.GetValue(folder)!.FullName, parse.GetValue(name)!, ct));
            AnsiConsole.MarkupLineInterpolated($"dataset [green]{info.Name}[/]: {info.Files} files, {info.Bytes / 1e6:0.0} MB");
            Console.WriteLine(info.Hash);
        }));

        var list = new Command("list", "List the registered datasets.");
        list.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var table = new Table().AddColumns("name", "hash", "files", "MB", "registered (UTC)");
            foreach (var d in await client.ListDatasetsAsync(ct))
                table.AddRow(d.Name, d.Hash, d.Files.ToString(), $"{d.Bytes / 1e6:0.0}", d.RegisteredAt.UtcDateTime.ToString("u"));
            AnsiConsole.Write(table);
        }));

        data.Subcommands.Add(upload);
        data.Subcommands.Add(list);
        return data;
    }

    public static Command Gallery()
    {
        var gallery = new Command("gallery", "Retrieval galleries (images/ and optional texts.json).");
        var folder = new Argument<DirectoryInfo>("folder") { Description = "a folder with images/ (PNG or JPEG) and optionally texts.json" };
        var name = new Option<string>("--name") { Required = true };
        var upload = new Command("upload", "Upload a gallery and register it under a name (a later upload under the same name replaces it).") { folder, name };
        upload.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var info = await client.UploadGalleryAsync(parse.GetValue(folder)!.FullName, parse.GetValue(name)!, ct);
            AnsiConsole.MarkupLineInterpolated($"gallery [green]{info.Name}[/]: {info.Images} images, {info.Texts} texts ({info.Hash[..12]})");
        }));
        var list = new Command("list", "List the galleries.");
        list.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var table = new Table().AddColumns("name", "images", "texts", "hash", "registered (UTC)");
            foreach (var g in await client.ListGalleriesAsync(ct))
                table.AddRow(g.Name, g.Images.ToString(), g.Texts.ToString(), g.Hash[..12], g.RegisteredAt.UtcDateTime.ToString("u"));
            AnsiConsole.Write(table);
        }));
        gallery.Subcommands.Add(upload);
        gallery.Subcommands.Add(list);
        return gallery;
    }
}
