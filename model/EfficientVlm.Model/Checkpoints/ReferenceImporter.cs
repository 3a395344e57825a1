using System.Text.RegularExpressions;
using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Checkpoints;

/// <summary>What an import did: keys of ours left unfilled, reference keys not used, shapes that did not fit.</summary>
public sealed record ImportReport(
    IReadOnlyList<string> Loaded,
    IReadOnlyList<string> Missing,
    IReadOnlyList<string> Unexpected,
    IReadOnlyList<string> ShapeMismatches)
{
    public bool Complete => Missing.Count == 0 && ShapeMismatches.Count == 0;
}

/// <summary>
/// Maps the reference implementation's state-dict names (X-VLM / EfficientVLM: Hugging Face CLIP
/// vision names under <c>vision_encoder.</c>, BERT names under <c>text_encoder.</c> with or without
/// <c>bert.</c>, <c>itm_head.0/1/3</c>, <c>cls_head.*</c> for NLVR2, <c>text_decoder.*</c> for VQA)
/// to ours. The single table of names is <see cref="Rules"/>; docs/model.md lists it.
/// </summary>
public static partial class ReferenceImporter
{
    private sealed record Rule(Regex Pattern, Func<Match, VlmConfig, string?> Target);

    private static Rule R(string pattern, Func<Match, VlmConfig, string?> target) =>
        new(new Regex("^" + pattern + "$", RegexOptions.Compiled), target);

    private static string BertBlock(string part) => part switch
    {
        "attention.self.query" => "self_attn.query",
        "attention.self.key" => "self_attn.key",
        "attention.self.value" => "self_attn.value",
        "attention.output.dense" => "self_attn.output",
        "attention.output.LayerNorm" => "self_ln",
        "crossattention.self.query" => "cross_attn.query",
        "crossattention.self.key" => "cross_attn.key",
        "crossattention.self.value" => "cross_attn.value",
        "crossattention.output.dense" => "cross_attn.output",
        "crossattention.output.LayerNorm" => "cross_ln",
        "intermediate.dense" => "ffn.fc1",
        "output.dense" => "ffn.fc2",
        "output.LayerNorm" => "ffn_ln",
        _ => throw new InvalidOperationException(part),
    };

    private const string BertParts = "(attention\\.self\\.(?:query|key|value)|attention\\.output\\.(?:dense|LayerNorm)|crossattention\\.self\\.(?:query|key|value)|crossattention\\.output\\.(?:dense|LayerNorm)|intermediate\\.dense|output\\.dense|output\\.LayerNorm)";

    /// <summary>Reference name patterns -> our name (null: known and deliberately not imported).</summary>
    private static readonly Rule[] Rules =
    [
        R(@"vision_encoder\.class_embedding", (_, _) => "vision.class_embedding"),
        R(@"vision_encoder\.patch_embed\.weight", (_, _) => "vision.conv1.weight"),
        R(@"vision_encoder\.pos_embed\.weight", (_, _) => "vision.positional_embedding"),
        R(@"vision_encoder\.pre_layrnorm\.(weight|bias)", (m, _) => $"vision.ln_pre.{m.Groups[1]}"),
        R(@"vision_encoder\.post_layernorm\.(weight|bias)", (m, _) => $"vision.ln_post.{m.Groups[1]}"),
        R(@"vision_encoder\.encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", (m, _) =>
            $"vision.layers.{m.Groups[1]}.attn.{m.Groups[2].Value switch { "q" => "query", "k" => "key", "v" => "value", _ => "output" }}.{m.Groups[3]}"),
        R(@"vision_encoder\.encoder\.layers\.(\d+)\.layer_norm(1|2)\.(weight|bias)", (m, _) => $"vision.layers.{m.Groups[1]}.ln_{m.Groups[2]}.{m.Groups[3]}"),
        R(@"vision_encoder\.encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", (m, _) => $"vision.layers.{m.Groups[1]}.mlp.{m.Groups[2]}.{m.Groups[3]}"),
        R(@"vision_encoder\.position_ids", (_, _) => null),
        R(@"text_encoder\.(?:bert\.)?embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight", (m, _) => $"embeddings.{m.Groups[1]}.weight"),
        R(@"text_encoder\.(?:bert\.)?embeddings\.LayerNorm\.(weight|bias)", (m, _) => $"embeddings.layer_norm.{m.Groups[1]}"),
        R(@"text_encoder\.(?:bert\.)?embeddings\.position_ids", (_, _) => null),
        R(@"text_encoder\.(?:bert\.)?encoder\.layer\.(\d+)\." + BertParts + @"\.(weight|bias)", (m, c) =>
        {
            int i = int.Parse(m.Groups[1].Value);
            var stack = i < c.TextLayers ? $"text.layers.{i}" : $"fusion.layers.{i - c.TextLayers}";
            return $"{stack}.{BertBlock(m.Groups[2].Value)}.{m.Groups[3]}";
        }),
        R(@"text_decoder\.bert\.encoder\.layer\.(\d+)\." + BertParts + @"\.(weight|bias)", (m, _) =>
            $"decoder.layers.{m.Groups[1]}.{BertBlock(m.Groups[2].Value)}.{m.Groups[3]}"),
        R(@"text_encoder\.cls\.predictions\.transform\.dense\.(weight|bias)", (m, _) => $"mlm_dense.{m.Groups[1]}"),
        R(@"text_encoder\.cls\.predictions\.transform\.LayerNorm\.(weight|bias)", (m, _) => $"mlm_norm.{m.Groups[1]}"),
        R(@"text_encoder\.cls\.predictions\.bias", (_, _) => "mlm_bias"),
        // tied to the word embeddings / the same tensor as predictions.bias in the reference
        R(@"text_encoder\.cls\.predictions\.decoder\.(weight|bias)", (_, _) => null),
        R(@"(vision_proj|text_proj)\.(weight|bias)", (m, _) => $"{m.Groups[1]}.{m.Groups[2]}"),
        R(@"temp", (_, _) => "temp"),
        R(@"itm_head\.(0|1|3)\.(weight|bias)", (m, _) => $"{m.Groups[1].Value switch { "0" => "itm_dense", "1" => "itm_norm", _ => "itm_out" }}.{m.Groups[2]}"),
        R(@"cls_head\.(0|1|3)\.(weight|bias)", (m, _) => $"{m.Groups[1].Value switch { "0" => "nlvr_dense", "1" => "nlvr_norm", _ => "nlvr_out" }}.{m.Groups[2]}"),
    ];

    /// <summary>Our name for a reference key, or null when the key is not imported.</summary>
    public static string? Map(string referenceKey, VlmConfig config)
    {
        foreach (var rule in Rules)
        {
            var match = rule.Pattern.Match(referenceKey);
            if (match.Success) return rule.Target(match, config);
        }
        return null;
    }

    /// <summary>
    /// Copies every mappable reference tensor into <paramref name="model"/>. The reference
    /// checkpoint may nest the state dict under <c>model</c> (we read the flat safetensors form).
    /// </summary>
    public static ImportReport Import(VlmModel model, IReadOnlyDictionary<string, Tensor> reference)
    {
        var ours = model.state_dict();
        var loaded = new List<string>();
        var unexpected = new List<string>();
        var mismatches = new List<string>();
        using (torch.no_grad())
        {
            foreach (var (key, tensor) in reference)
            {
                var target = Map(key, model.Config);
                if (target is null || !ours.TryGetValue(target, out var destination))
                {
                    unexpected.Add(key);
                    continue;
                }
                if (!destination.shape.SequenceEqual(tensor.shape))
                {
                    mismatches.Add($"{key} [{string.Join(",", tensor.shape)}] -> {target} [{string.Join(",", destination.shape)}]");
                    continue;
                }
                destination.copy_(tensor);
                loaded.Add(target);
            }
        }
        var missing = ours.Keys.Except(loaded).ToList();
        return new ImportReport(loaded, missing, unexpected, mismatches);
    }

    /// <summary>
    /// Reads a reference checkpoint and imports it: <c>.safetensors</c>, or a PyTorch <c>torch.save</c>
    /// file (<c>.pth</c>, <c>.th</c>, <c>.bin</c>, <c>.pt</c>) holding the state dict (the reference's
    /// <c>{'model': state_dict, ...}</c> wrapper must be unwrapped in Python first:
    /// <c>torch.save(ckpt['model'], path)</c>).
    /// </summary>
    public static ImportReport ImportFile(VlmModel model, string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path} does not exist.", path);
        using var scope = torch.NewDisposeScope();
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            return Import(model, Safetensors.LoadStateDict(path));
        Dictionary<string, Tensor> state;
        try
        {
            state = PyTorchUnpickler.UnpickleStateDict(path).Cast<System.Collections.DictionaryEntry>()
                .ToDictionary(e => (string)e.Key, e => (Tensor)e.Value!);
        }
        catch (Exception e) when (e is InvalidCastException or InvalidDataException or NotSupportedException or NotImplementedException or IOException or ArgumentException)
        {
            throw new InvalidDataException($"{path} is not a PyTorch state dict of tensors (unwrap ckpt['model'] first): {e.Message}", e);
        }
        return Import(model, state);
    }
}
