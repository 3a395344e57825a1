using System.CommandLine;
using Spectre.Console;

namespace EfficientVlm.Cli;

/// <summary><c>fleet ask | verify | caption</c>: calls to a ready variant.</summary>
internal static class ServeCommands
{
    private static Option<string> Variant() => new("--variant") { Description = "variant id (fleet variants list)", Required = true };

    private static byte[] Read(FileInfo file)
    {
        if (!file.Exists) throw new ArgumentException($"No file {file.FullName}.");
        return File.ReadAllBytes(file.FullName);
    }

    public static IEnumerable<Command> Create()
    {
        var variant = Variant();
        var image = new Option<FileInfo>("--image") { Description = "PNG or JPEG", Required = true };
        var question = new Option<string>("--question") { Required = true };
        var ask = new Command("ask", "VQA: answer a question about an image.") { variant, image, question };
        ask.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
            Console.WriteLine(await client.AnswerAsync(parse.GetValue(variant)!, Read(parse.GetValue(image)!), parse.GetValue(question)!, ct))));
        yield return ask;

        var variant2 = Variant();
        var left = new Option<FileInfo>("--left") { Required = true };
        var right = new Option<FileInfo>("--right") { Required = true };
        var statement = new Option<string>("--statement") { Required = true };
        var verify = new Command("verify", "NLVR2: is the statement true of the two images?") { variant2, left, right, statement };
        verify.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            bool result = await client.VerifyAsync(parse.GetValue(variant2)!, Read(parse.GetValue(left)!), Read(parse.GetValue(right)!),
                parse.GetValue(statement)!, ct);
            AnsiConsole.MarkupLine(result ? "[green]true[/]" : "[red]false[/]");
        }));
        yield return verify;

        var variant3 = Variant();
        var image3 = new Option<FileInfo>("--image") { Description = "PNG or JPEG", Required = true };
        var caption = new Command("caption", "Captioning: describe an image.") { variant3, image3 };
        caption.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
            Console.WriteLine(await client.CaptionAsync(parse.GetValue(variant3)!, Read(parse.GetValue(image3)!), ct))));
        yield return caption;

        var variant4 = Variant();
        var gallery = new Option<string>("--gallery") { Description = "gallery name (fleet gallery upload)", Required = true };
        var text = new Option<string?>("--text") { Description = "rank the gallery's images for this text" };
        var image4 = new Option<FileInfo?>("--image") { Description = "rank the gallery's texts for this image" };
        var k = new Option<int>("--k") { DefaultValueFactory = _ => 5 };
        var retrieve = new Command("retrieve", "Retrieval: rank a gallery's images for a text (--text) or its texts for an image (--image).")
        {
            variant4, gallery, text, image4, k,
        };
        retrieve.SetAction((parse, ct) => CliConnection.RunAsync(parse, ct, async client =>
        {
            var ranked = (parse.GetValue(text), parse.GetValue(image4)) switch
            {
                ({ } t, null) => await client.RankImagesAsync(parse.GetValue(variant4)!, parse.GetValue(gallery)!, t, parse.GetValue(k), ct),
                (null, { } f) => await client.RankTextsAsync(parse.GetValue(variant4)!, parse.GetValue(gallery)!, Read(f), parse.GetValue(k), ct),
                _ => throw new ArgumentException("Give either --text or --image."),
            };
            var table = new Table().AddColumns("rank", "item", "similarity");
            for (int i = 0; i < ranked.Count; i++) table.AddRow($"{i + 1}", Markup.Escape(ranked[i].Item), $"{ranked[i].Score:0.000}");
            AnsiConsole.Write(table);
        }));
        yield return retrieve;
    }
}
