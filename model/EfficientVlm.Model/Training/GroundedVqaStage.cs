using EfficientVlm.Model.Data.Pipeline;
using EfficientVlm.Model.Data.Readers;
using EfficientVlm.Model.Metrics;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Objectives;
using EfficientVlm.Model.Tasks;
using EfficientVlm.Model.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Training;

/// <summary>
/// A VQA batch with the object targets of its images: per image the patch targets [G * G]
/// (<see cref="Grounding.PatchTargets"/>), one described object's description and its box (cx, cy, w, h),
/// and whether the image has an object at all (images without any give no box loss).
/// </summary>
public sealed record GroundedVqaBatchData(VqaBatchData Vqa, long[] PatchTargets, long[][] Descriptions, float[] Boxes, float[] Inside, float[] HasObject,
    long[][] Captions)
{
    /// <summary>One caption of each image [B, T] and its padding, for the masked-language term.</summary>
    public (Tensor Ids, Tensor Padding) CaptionTensors(Device device)
    {
        var (ids, padding) = VlmTokenizer.Pad(Captions, Vqa.Pad);
        return (ids.to(device), padding.to(device));
    }

    public (Tensor Patches, Tensor Descriptions, Tensor DescriptionPadding, Tensor Boxes, Tensor Inside, Tensor HasObject) TargetTensors(Device device)
    {
        var (ids, padding) = VlmTokenizer.Pad(Descriptions, Vqa.Pad);
        return (torch.tensor(PatchTargets, device: device), ids.to(device), padding.to(device),
            torch.tensor(Boxes, device: device).view(-1, 4), torch.tensor(Inside, device: device).view(HasObject.Length, -1),
            torch.tensor(HasObject, device: device));
    }
}

/// <summary>Weights of the grounding terms beside the VQA loss (0 turns a term off).</summary>
public sealed record GroundingWeights(double Patch = 1.0, double Box = 1.0, double Attention = 0.0, double Mlm = 0.0)
{
    public GroundingWeights Validated() =>
        new[] { Patch, Box, Attention, Mlm }.All(w => w is >= 0 and <= 100) ? this : throw new ArgumentException("Grounding weights must be in [0, 100].");
}

/// <summary>
/// The CPU teacher's supervised stage (docs/training.md, "The CPU teacher"): VQA (the answer decoder's
/// weighted NLL) plus the object-level grounding of <see cref="GroundingHeads"/> and, optionally, MLM on a
/// caption of each image, all on one vision pass: the patch term on every patch token, the box term for one described object per
/// image (X-VLM's objective). The heads belong to the stage, are saved with its resumable checkpoint, and
/// are dropped afterwards. Validated by VQA accuracy on val; <paramref name="onValidation"/> gets the score
/// per question type each time.
/// </summary>
public sealed class GroundedVqaStage : StageBase<GroundedVqaBatchData>, IDisposable
{
    private const string HeadFile = "grounding-heads.safetensors";
    private readonly GroundingHeads _heads;
    private readonly Dictionary<int, int> _categoryIndex;
    private readonly GroundingWeights _weights;
    private readonly Action<IReadOnlyList<VqaFormScore>>? _onValidation;

    public GroundedVqaStage(VlmModel model, TaskData data, int batchSize, int seed, GroundingWeights weights,
        ISet<string>? fresh = null, Action<IReadOnlyList<VqaFormScore>>? onValidation = null)
        : base(model, data, batchSize, seed, fresh)
    {
        if (model.Config.Task != Config.VlmTask.Vqa) throw new ArgumentException("The grounded VQA stage trains a VQA model (with its answer decoder).");
        _weights = weights.Validated();
        _onValidation = onValidation;
        var categories = data.Instances("train").Categories.Keys.Order().ToList();
        _categoryIndex = categories.Select((id, i) => (id, i)).ToDictionary(x => x.id, x => x.i);
        var device = model.parameters().First().device;
        _heads = Runtime.Scopes.Keep(new GroundingHeads(model.Config.Hidden, categories.Count, device));
    }

    public override int BatchesPerEpoch => Count(Data.Vqa("train").Count, BatchSize);

    public override IEnumerable<GroundedVqaBatchData> Batches(int epoch, int skip) => Prefetched(Data.Vqa("train"), epoch, skip, Collate);

    private GroundedVqaBatchData Collate(IReadOnlyList<VqaItem> items)
    {
        var instances = Data.Instances("train");
        var config = Model.Config;
        int cells = (config.ImageSize / config.PatchSize) * (config.ImageSize / config.PatchSize);
        var patches = new long[items.Count * cells];
        var descriptions = new long[items.Count][];
        var boxes = new float[items.Count * 4];
        var has = new float[items.Count];
        var inside = new float[items.Count * cells];
        var captions = new long[items.Count][];
        var captionsOf = CaptionsByImage();
        for (int i = 0; i < items.Count; i++)
        {
            var own = captionsOf.TryGetValue(items[i].ImageId, out var c) && c.Count > 0 ? c : [""];
            captions[i] = Data.Tokenizer.Encode(own[EfficientVlm.Model.Data.ShapesWorld.Seeds.For(Seed, "mlm-caption", items[i].QuestionId).Next(own.Count)],
                config.MaxTextLength);
            if (!instances.Images.TryGetValue(items[i].ImageId, out var image))
                throw new DatasetFormatException($"Image {items[i].ImageId} of VQA question {items[i].QuestionId} has no entry in instances_train.json.");
            Grounding.PatchTargets(image, config.ImageSize, config.PatchSize, _categoryIndex).CopyTo(patches, i * cells);
            if (image.Objects.Count == 0)
            {
                descriptions[i] = Data.Tokenizer.Encode("", config.MaxTextLength);
                continue;
            }
            // one object per question, drawn from the question's own stream: the same object on a resumed run
            var chosen = image.Objects[EfficientVlm.Model.Data.ShapesWorld.Seeds.For(Seed, "grounding", items[i].QuestionId).Next(image.Objects.Count)];
            descriptions[i] = Data.Tokenizer.Encode(instances.Categories[chosen.CategoryId], config.MaxTextLength);
            Grounding.BoxTarget(chosen, image.Width, image.Height).CopyTo(boxes, i * 4);
            Grounding.PatchesInside(chosen, image.Width, image.Height, config.ImageSize, config.PatchSize).CopyTo(inside, i * cells);
            has[i] = 1;
        }
        return new GroundedVqaBatchData(Data.Collate.Vqa(items), patches, descriptions, boxes, inside, has, captions);
    }

    private Dictionary<long, IReadOnlyList<string>>? _captions;

    private Dictionary<long, IReadOnlyList<string>> CaptionsByImage()
    {
        lock (this) return _captions ??= _weights.Mlm > 0 ? Data.Captions("train").ToDictionary(c => c.ImageId, c => c.Captions) : [];
    }

    /// <summary>The model's groups, and the stage's heads at twice the rate (weights decay, biases and norms do not).</summary>
    public override IEnumerable<(IEnumerable<Parameter> Parameters, double LrMultiplier, bool Decay)> ParameterGroups() =>
        base.ParameterGroups().Concat(
        [
            (_heads.parameters().Where(p => p.dim() >= 2).ToList(), 2.0, true),
            (_heads.parameters().Where(p => p.dim() < 2).ToList(), 2.0, false),
        ]);

    public override StepLoss Loss(GroundedVqaBatchData batch, Device device, int step)
    {
        var (images, ids, padding, answers) = batch.Vqa.ToTensors(device);
        var (patchTargets, descIds, descPadding, boxes, inside, has) = batch.TargetTensors(device);
        var vision = Model.EncodeImage(images).Last;                                          // (B, N, D)
        var fused = Model.Fuse(Model.EncodeText(ids, padding).Last, padding, vision).Last;     // (B, T, D)
        var nll = Vqa.AnswerNll(Model, fused.index_select(0, answers.Owner), padding.index_select(0, answers.Owner),
            answers.Ids, answers.Padding);
        var vqa = Vqa.WeightedLoss(nll, answers, ids.shape[0]);
        var parts = new Dictionary<string, Tensor> { ["vqa"] = vqa };
        var total = vqa;
        if (_weights.Patch > 0)
        {
            var logits = _heads.Patches(vision);                                                 // (B, G*G, C+1)
            var patch = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[2]), patchTargets);
            parts["patch"] = patch;
            total = total.add(patch, Runtime.Scalars.Of(_weights.Patch));
        }
        if (_weights.Box > 0 || _weights.Attention > 0)
        {
            // one fusion pass of each image's described object, for both terms
            var described = Model.Fuse(Model.EncodeText(descIds, descPadding).Last, descPadding, vision, collect: _weights.Attention > 0);
            if (_weights.Attention > 0)
            {
                // the first head of the first fusion layer, from [CLS] only: one head learns to find a described object
                // and the rest stay free (every head from every token, as first tried, slowed VQA; docs/training.md)
                var attention = Grounding.AttentionLoss(described.CrossAttentions[0]!.narrow(1, 0, 1).narrow(2, 0, 1), descPadding.narrow(1, 0, 1),
                    inside, has);
                parts["attn"] = attention;
                total = total.add(attention, Runtime.Scalars.Of(_weights.Attention));
            }
            if (_weights.Box > 0)
            {
                var predicted = _heads.Box(described.Last);
                // images without objects: their rows predict their own output, so they add nothing
                var keep = has.view(-1, 1);
                var target = boxes.mul(keep).add(predicted.detach().mul(keep.neg().add(Runtime.Scalars.One)), Runtime.Scalars.One);
                var (l1, giou) = Grounding.BoxLoss(predicted, target);
                parts["l1"] = l1;
                parts["giou"] = giou;
                total = total.add(l1.add(giou, Runtime.Scalars.One), Runtime.Scalars.Of(_weights.Box));
            }
        }
        if (_weights.Mlm > 0)
        {
            // MLM on a caption of the same image (X-VLM's objective): a masked attribute is found by binding the rest of
            // its description to an object, many such problems per caption
            var (captionIds, captionPadding) = batch.CaptionTensors(device);
            var (masked, positions, targets) = Pretraining.MaskTokens(captionIds, captionPadding, Data.Tokenizer.Special);
            var fusedCaption = Model.Fuse(Model.EncodeText(masked, captionPadding).Last, captionPadding, vision).Last;
            var states = fusedCaption.reshape(-1, fusedCaption.shape[2]).index_select(0, positions);
            var mlm = torch.nn.functional.cross_entropy(Model.LmLogits(states), targets);
            parts["mlm"] = mlm;
            total = total.add(mlm, Runtime.Scalars.Of(_weights.Mlm));
        }
        return new StepLoss(total, parts);
    }

    public override double Validate(Device device)
    {
        var items = Data.Vqa("val");
        var answers = Evaluation.VqaAnswers(Model, items, Data.Collate, Data.AnswerList, device);
        _onValidation?.Invoke(Breakdown.Vqa(items, answers));
        return VqaAccuracy.Mean(answers.Zip(items, (p, i) => (p, i.Answers)));
    }

    public override void SaveState(string folder) => SaveHead(_heads, Path.Combine(folder, HeadFile));

    public override void LoadState(string folder) => LoadHead(_heads, Path.Combine(folder, HeadFile));

    public void Dispose() => _heads.Dispose();
}
