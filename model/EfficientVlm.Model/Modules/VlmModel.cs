using EfficientVlm.Model.Config;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Modules;

/// <summary>
/// The vision-language model: vision encoder, text encoder (BERT embeddings + text layers), fusion
/// encoder (BERT layers with cross-attention to image tokens), the pre-training heads (ITC, ITM,
/// MLM) and the VQA answer decoder. Task heads that reuse these weights (retrieval, captioning,
/// NLVR2) live in Tasks/.
/// </summary>
public sealed class VlmModel : Module
{
    private readonly VisionEncoder vision;
    private readonly TextEmbeddings embeddings;
    private readonly BertStack text;
    private readonly BertStack fusion;
    private readonly BertStack decoder;
    private readonly Linear vision_proj;
    private readonly Linear text_proj;
    private readonly Parameter temp;
    private readonly Linear itm_dense;
    private readonly LayerNorm itm_norm;
    private readonly Linear itm_out;
    private readonly Linear mlm_dense;
    private readonly LayerNorm mlm_norm;
    private readonly Parameter mlm_bias;
    private readonly Linear? nlvr_dense;
    private readonly LayerNorm? nlvr_norm;
    private readonly Linear? nlvr_out;

    public VlmModel(VlmConfig config, Device? device = null) : base("vlm")
    {
        Config = config.Validated();
        int d = config.Hidden;
        vision = new VisionEncoder("vision", config, device);
        embeddings = new TextEmbeddings("embeddings", config, device);
        text = new BertStack("text", config, Stack.Text, device);
        fusion = new BertStack("fusion", config, Stack.Fusion, device);
        decoder = new BertStack("decoder", config, Stack.Decoder, device);
        vision_proj = Linear(d, config.EmbedDim, device: device);
        text_proj = Linear(d, config.EmbedDim, device: device);
        temp = Parameter(torch.tensor(0.07f, device: device));
        itm_dense = Linear(d, 2 * d, device: device);
        itm_norm = LayerNorm(2 * d, 1e-5, device: device);
        itm_out = Linear(2 * d, 2, device: device);
        mlm_dense = Linear(d, d, device: device);
        mlm_norm = LayerNorm(d, 1e-12, device: device);
        mlm_bias = Parameter(torch.zeros(config.VocabSize, device: device));
        if (config.Task == VlmTask.Nlvr2)
        {
            nlvr_dense = Linear(d, 2 * d, device: device);
            nlvr_norm = LayerNorm(2 * d, 1e-5, device: device);
            nlvr_out = Linear(2 * d, 2, device: device);
        }
        RegisterComponents();
    }

    public VlmConfig Config { get; }

    public BertStack Fusion => fusion;
    public BertStack Decoder => decoder;

    /// <summary>images [B, 3, H, W] -> image tokens [B, N, D]</summary>
    public EncoderOutput EncodeImage(Tensor images, ModelGates? gates = null, bool collect = false) =>
        vision.Forward(images, gates?.Vision, collect, gates?.Stem);

    /// <summary>ids [B, T], padding [B, T] (1 token, 0 pad) -> text states [B, T, D] (text layers, no image)</summary>
    public EncoderOutput EncodeText(Tensor ids, Tensor padding, ModelGates? gates = null, bool collect = false, bool causal = false)
    {
        CheckIds(ids, padding);
        var mask = causal ? Masks.Causal(padding) : Masks.FromPadding(padding);
        return text.Forward(embeddings.Forward(ids), mask, gates: gates?.Text, collect: collect);
    }

    /// <summary>text states [B, T, D] + image tokens [B, N, D] -> fused states [B, T, D]</summary>
    public EncoderOutput Fuse(Tensor textStates, Tensor padding, Tensor image, ModelGates? gates = null,
        bool collect = false, bool causal = false)
    {
        var mask = causal ? Masks.Causal(padding) : Masks.FromPadding(padding);
        return fusion.Forward(textStates, mask, image, null, gates?.Fusion, collect);
    }

    /// <summary>NLVR2: text states [B, T, D] over two images [B, N, D] each, through the doubled fusion stack -> [B, T, D]</summary>
    public EncoderOutput FusePair(Tensor textStates, Tensor padding, Tensor image0, Tensor image1, ModelGates? gates = null,
        bool collect = false)
    {
        if (Config.Task != VlmTask.Nlvr2) throw new InvalidOperationException("FusePair needs a model built for NLVR2.");
        return fusion.Forward(textStates, Masks.FromPadding(padding), [image0, image1], null, gates?.Fusion, collect);
    }

    /// <summary>NLVR2: fused states [B, T, D] -> logits [B, 2] (index 1 = the statement is true)</summary>
    public Tensor NlvrLogits(Tensor fused)
    {
        if (nlvr_dense is null) throw new InvalidOperationException("NlvrLogits needs a model built for NLVR2.");
        return nlvr_out!.forward(functional.gelu(nlvr_norm!.forward(nlvr_dense.forward(fused.select(1, 0)))));
    }

    /// <summary>VQA: the answer decoder over answer ids [B, La] (causal) attending to question states [B, T, D] -> [B, La, D]</summary>
    public EncoderOutput DecodeAnswer(Tensor answerIds, Tensor answerPadding, Tensor questionStates, Tensor questionPadding,
        ModelGates? gates = null, bool collect = false)
    {
        if (Config.Task != VlmTask.Vqa) throw new InvalidOperationException("DecodeAnswer needs a model built for VQA.");
        return decoder.Forward(embeddings.Forward(answerIds), Masks.Causal(answerPadding), questionStates,
            Masks.FromPadding(questionPadding), gates?.Decoder, collect);
    }

    /// <summary>image tokens [B, N, D] -> L2-normalised ITC embedding of the class token [B, E]</summary>
    public Tensor ImageEmbedding(Tensor imageTokens) =>
        functional.normalize(vision_proj.forward(imageTokens.select(1, 0)), dim: -1);

    /// <summary>text states [B, T, D] -> L2-normalised ITC embedding of [CLS] [B, E]</summary>
    public Tensor TextEmbedding(Tensor textStates) =>
        functional.normalize(text_proj.forward(textStates.select(1, 0)), dim: -1);

    /// <summary>The ITC temperature, clamped to [0.001, 0.5] (method.md).</summary>
    public Tensor Temperature => temp.clamp(0.001, 0.5);

    /// <summary>Keeps the learnable temperature inside its range after an optimiser step.</summary>
    public void ClampTemperature()
    {
        using var _ = torch.no_grad();
        temp.clamp_(0.001, 0.5);
    }

    /// <summary>fused states [B, T, D] -> ITM logits [B, 2] from [CLS] (index 1 = match)</summary>
    public Tensor ItmLogits(Tensor fused)
    {
        var h = itm_dense.forward(fused.select(1, 0));
        return itm_out.forward(functional.gelu(itm_norm.forward(h)));
    }

    /// <summary>states [M, D] (masked positions only) -> vocabulary logits [M, V]; the decoder is tied to the word embeddings.</summary>
    public Tensor LmLogits(Tensor states)
    {
        var h = mlm_norm.forward(functional.gelu(mlm_dense.forward(states)));
        return functional.linear(h, embeddings.WordWeights, mlm_bias);
    }

    /// <summary>Word embeddings of ids [B, T] (with positions, LayerNorm): the decoder's input.</summary>
    public Tensor Embed(Tensor ids) => embeddings.Forward(ids);

    private void CheckIds(Tensor ids, Tensor padding)
    {
        if (ids.dim() != 2 || !ids.shape.SequenceEqual(padding.shape))
            throw new ArgumentException($"Token ids [B, T] and padding [B, T] must match; got [{string.Join(", ", ids.shape)}] and [{string.Join(", ", padding.shape)}].");
        if (ids.shape[1] == 0) throw new ArgumentException("Text must have at least one token.");
    }
}
