using System.Text.RegularExpressions;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Pruning;

/// <summary>What survives in one layer: indices (ascending) of kept heads, cross heads and FFN neurons.</summary>
public sealed record LayerKeep(long[] Heads, long[] CrossHeads, long[] Ffn);

/// <summary>What survives in every stack (null: the stack is kept whole).</summary>
public sealed record ModelKeep
{
    public LayerKeep[]? Vision { get; init; }
    public LayerKeep[]? Text { get; init; }
    public LayerKeep[]? Fusion { get; init; }
    public LayerKeep[]? Decoder { get; init; }
    /// <summary>Kept output channels (ascending) of each inner convolution of the conv stem; null: the stem is kept whole.</summary>
    public long[][]? Stem { get; init; }

    public LayerKeep[]? For(Stack stack) => stack switch
    {
        Stack.Vision => Vision,
        Stack.Text => Text,
        Stack.Fusion => Fusion,
        Stack.Decoder => Decoder,
        _ => throw new ArgumentOutOfRangeException(nameof(stack)),
    };

    /// <summary>Reads binary gates (0 = pruned, anything else = kept) into index lists.</summary>
    public static ModelKeep FromGates(ModelGates gates)
    {
        static long[] Nonzero(Tensor? g, long size) =>
            g is null ? Enumerable.Range(0, (int)size).Select(i => (long)i).ToArray()
                : g.detach().cpu().to(ScalarType.Float32).data<float>().ToArray()
                    .Select((v, i) => (v, i)).Where(p => p.v != 0).Select(p => (long)p.i).ToArray();

        LayerKeep[]? Read(LayerGates[]? stack) => stack?.Select(l => new LayerKeep(
            Nonzero(l.Heads, l.Heads?.shape[0] ?? 0), Nonzero(l.CrossHeads, l.CrossHeads?.shape[0] ?? 0),
            Nonzero(l.Ffn, l.Ffn?.shape[0] ?? 0))).ToArray();

        return new ModelKeep
        {
            Vision = Read(gates.Vision),
            Text = Read(gates.Text),
            Fusion = Read(gates.Fusion),
            Decoder = Read(gates.Decoder),
            Stem = gates.Stem?.Select(g => Nonzero(g, g.shape[0])).ToArray(),
        };
    }
}

/// <summary>
/// Physically removes pruned heads and FFN neurons: builds a model from the pruned config (which
/// records heads kept and FFN width per layer) and copies the kept rows/columns into it. The result
/// computes what the gated model computes with the same 0/1 gates, with smaller matrices.
/// </summary>
public static partial class Shrinker
{
    [GeneratedRegex(@"^(vision|text|fusion|decoder)\.layers\.(\d+)\.(attn|self_attn|cross_attn|mlp|ffn)\.(query|key|value|output|fc1|fc2)\.(weight|bias)$")]
    private static partial Regex PrunableKey();

    [GeneratedRegex(@"^vision\.stem\.convs\.(\d+)\.(weight|bias)$")]
    private static partial Regex StemKey();

    public static VlmModel Shrink(VlmModel model, ModelKeep keep)
    {
        var config = model.Config;
        var shapes = new Dictionary<Stack, LayerShape[]>();
        foreach (var stack in Enum.GetValues<Stack>())
        {
            var stackKeep = keep.For(stack);
            if (stackKeep is null) continue;
            if (stackKeep.Length != config.Layers(stack))
                throw new ArgumentException($"Keep lists for {stack} have {stackKeep.Length} layers; the model has {config.Layers(stack)}.");
            shapes[stack] = stackKeep.Select((k, i) =>
            {
                var current = config.Shape(stack, i);
                Check(k.Heads, current.Heads, $"{stack} layer {i}", "heads");
                Check(k.CrossHeads, current.CrossHeads, $"{stack} layer {i}", "cross heads");
                Check(k.Ffn, current.FfnWidth, $"{stack} layer {i}", "FFN neurons");
                return new LayerShape(k.Heads.Length, k.CrossHeads.Length, k.Ffn.Length);
            }).ToArray();
        }

        if (config.Task == VlmTask.Nlvr2 && keep.Fusion is { } fusionKeep)
        {
            for (int i = 1; i < fusionKeep.Length; i += 2)
                if (!fusionKeep[i].CrossHeads.SequenceEqual(fusionKeep[i - 1].CrossHeads))
                    throw new ArgumentException($"NLVR2 fusion layers {i - 1} and {i} share cross-attention key/value: they must keep the same cross heads.");
        }

        var stemWidths = config.Pruned?.StemWidths;
        if (keep.Stem is { } stemKeep)
        {
            if (config.Stem != VisionStem.Conv) throw new ArgumentException("Kept stem channels need the conv stem; this model has a patch projection.");
            var current = config.StemWidths;
            if (stemKeep.Length != current.Count)
                throw new ArgumentException($"Keep lists for the stem have {stemKeep.Length} rows; the stem has {current.Count} inner convolutions.");
            for (int i = 0; i < stemKeep.Length; i++)
            {
                if (stemKeep[i].Length == 0) throw new ArgumentException($"The stem cannot lose every channel of convolution {i}.");
                Check(stemKeep[i], current[i], $"stem convolution {i}", "channels");
            }
            stemWidths = stemKeep.Select(k => k.Length).ToArray();
        }

        LayerShape[]? ShapesOf(Stack s) => shapes.TryGetValue(s, out var v) ? v
            : config.Pruned?.For(s)?.ToArray();
        var pruned = config with
        {
            Pruned = new PrunedShape
            {
                Vision = ShapesOf(Stack.Vision),
                Text = ShapesOf(Stack.Text),
                Fusion = ShapesOf(Stack.Fusion),
                Decoder = ShapesOf(Stack.Decoder),
                StemWidths = stemWidths,
            },
        };

        var device = model.parameters().First().device;
        var shrunk = Runtime.Scopes.Keep(new VlmModel(pruned, device));
        using (torch.no_grad())
        {
            var source = model.state_dict();
            var target = new Dictionary<string, Tensor>();
            foreach (var (name, tensor) in source)
            {
                var sliced = Slice(name, tensor, keep, config);
                if (sliced is not null) target[name] = sliced;
            }
            var (missing, unexpected) = shrunk.load_state_dict(target, strict: true);
            if (missing.Count > 0 || unexpected.Count > 0)
                throw new InvalidOperationException($"Shrink produced a state dict that does not fit: missing {string.Join(", ", missing)}; unexpected {string.Join(", ", unexpected)}.");
        }
        if (!model.training) shrunk.eval();
        return shrunk;
    }

    /// <summary>The kept part of one tensor; null when the whole sub-block is gone.</summary>
    private static Tensor? Slice(string name, Tensor tensor, ModelKeep keep, VlmConfig config)
    {
        if (keep.Stem is { } stem && StemKey().Match(name) is { Success: true } conv)
        {
            // conv i: its output channels (weight rows, bias) when it is an inner one, and its input channels (weight
            // columns) when the one before it lost some; the last conv's output (the hidden size) stays whole
            int i = int.Parse(conv.Groups[1].Value);
            var t = tensor;
            if (i < stem.Length) t = t.index_select(0, torch.tensor(stem[i], device: tensor.device));
            if (conv.Groups[2].Value == "weight" && i >= 1 && i - 1 < stem.Length) t = t.index_select(1, torch.tensor(stem[i - 1], device: tensor.device));
            return t.clone();
        }
        var match = PrunableKey().Match(name);
        if (!match.Success) return tensor;
        var stack = Enum.Parse<Stack>(match.Groups[1].Value, ignoreCase: true);
        var stackKeep = keep.For(stack);
        if (stackKeep is null) return tensor;
        var layer = stackKeep[int.Parse(match.Groups[2].Value)];
        string block = match.Groups[3].Value, linear = match.Groups[4].Value, kind = match.Groups[5].Value;

        long[] units; long unitSize;
        switch (block)
        {
            case "attn" or "self_attn": units = layer.Heads; unitSize = config.HeadSize; break;
            case "cross_attn": units = layer.CrossHeads; unitSize = config.HeadSize; break;
            default: units = layer.Ffn; unitSize = 1; break;
        }
        if (units.Length == 0) return null;
        var index = torch.tensor(units.SelectMany(u => Enumerable.Range(0, (int)unitSize).Select(j => u * unitSize + j)).ToArray(),
            device: tensor.device);
        bool rowsOut = linear is "query" or "key" or "value" or "fc1";
        if (rowsOut) return tensor.index_select(0, index).clone();
        return kind == "weight" ? tensor.index_select(1, index).clone() : tensor; // output / fc2: columns; bias unchanged
    }

    private static void Check(long[] keep, int current, string where, string what)
    {
        for (int i = 0; i < keep.Length; i++)
        {
            if (keep[i] < 0 || keep[i] >= current || (i > 0 && keep[i] <= keep[i - 1]))
                throw new ArgumentException($"{where}: kept {what} must be ascending indices below {current}.");
        }
    }
}
