using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace EfficientVlm.Model.Pruning;

/// <summary>Expected (or final) size of what pruning keeps, overall and per modality.</summary>
public sealed record PruningSize(double ExpectedSparsity, IReadOnlyDictionary<string, double> KeptHeads, IReadOnlyDictionary<string, double> KeptNeurons,
    double ExpectedParameters, double PrunableParameters);

/// <summary>
/// The log_alpha of every prunable unit of a model (method.md section 4): one row of head gates per
/// attention block (vision, text, fusion self- and cross-attention, decoder self- and cross-attention)
/// and one row of neuron gates per FFN, each stack indexing its own rows (reference bug 1 fixed).
/// NLVR2's two cross-attentions of a fusion pair share key/value, so they share one gate row.
/// Opt-in (<c>stem: true</c>): one row of channel gates per inner convolution of the conv stem, part of the vision
/// modality but outside the parameter pool above: their cost is the stem's multiply-adds (<see cref="StemCost"/>), held at
/// a target of its own by the controller, so the parameter sparsity keeps its meaning (docs/stem-pruning-plan.md).
/// </summary>
public sealed class PruningMasks : Module
{
    private readonly Parameter? vision_heads, text_heads, fusion_heads, fusion_cross_heads, decoder_heads, decoder_cross_heads;
    private readonly Parameter? vision_ffn, text_ffn, fusion_ffn, decoder_ffn;
    private readonly Parameter? vision_stem_0, vision_stem_1, vision_stem_2, vision_stem_3;
    private readonly VlmConfig _config;

    /// <summary>The stem's channel gates start at log_alpha 3 (P(keep) 0.99): the stem feeds every token, so it starts whole.</summary>
    public const double StemInitialLogAlpha = 3;

    /// <param name="stem">Gate the conv stem's channels too (needs <see cref="VisionStem.Conv"/>).</param>
    /// <param name="stemMultiple">The final masks keep a multiple of this many channels in each stem row (odd widths run
    /// slower than multiples of 8 in libtorch's convolutions: docs/stem-pruning-plan.md, step 0).</param>
    public PruningMasks(VlmConfig config, Device? device = null, bool stem = false, int stemMultiple = 8) : base("l0")
    {
        if (config.Pruned is not null) throw new ArgumentException("Masks are learned on an unpruned model.");
        if (stem && config.Stem != VisionStem.Conv) throw new ArgumentException("Stem channels can be pruned only in a conv stem; this model has a patch projection.");
        if (stemMultiple < 1) throw new ArgumentException($"The stem's channel multiple must be at least 1; got {stemMultiple}.");
        _config = config;
        StemMultiple = stemMultiple;
        Parameter? Heads(int rows) => rows == 0 ? null :
            Parameter(torch.normal(10, 0.01, [rows, config.Heads], device: device).clamp(HardConcrete.MinLogAlpha, HardConcrete.MaxLogAlpha));
        Parameter? Ffn(int rows) => rows == 0 ? null : Parameter(torch.normal(0, 0.01, [rows, config.Intermediate], device: device));
        int fusion = config.Layers(Stack.Fusion);
        int crossRows = config.Task == VlmTask.Nlvr2 ? fusion / 2 : fusion;
        vision_heads = Heads(config.Layers(Stack.Vision));
        text_heads = Heads(config.Layers(Stack.Text));
        fusion_heads = Heads(fusion);
        fusion_cross_heads = Heads(crossRows);
        decoder_heads = Heads(config.Layers(Stack.Decoder));
        decoder_cross_heads = Heads(config.Layers(Stack.Decoder));
        vision_ffn = Ffn(config.Layers(Stack.Vision));
        text_ffn = Ffn(config.Layers(Stack.Text));
        fusion_ffn = Ffn(fusion);
        decoder_ffn = Ffn(config.Layers(Stack.Decoder));
        if (stem)
        {
            var widths = config.StemWidths;
            if (widths.Count > 4) throw new ArgumentException($"At most 4 stem rows can be gated; this stem has {widths.Count}.");
            Parameter Row(int i) => Parameter(torch.normal(StemInitialLogAlpha, 0.01, [widths[i]], device: device));
            vision_stem_0 = Row(0);
            if (widths.Count > 1) vision_stem_1 = Row(1);
            if (widths.Count > 2) vision_stem_2 = Row(2);
            if (widths.Count > 3) vision_stem_3 = Row(3);
        }
        RegisterComponents();
    }

    /// <summary>Whether the conv stem's channels are gated.</summary>
    public bool HasStem => vision_stem_0 is not null;

    public int StemMultiple { get; }

    private Parameter[] StemRows => new[] { vision_stem_0, vision_stem_1, vision_stem_2, vision_stem_3 }.OfType<Parameter>().ToArray();

    /// <summary>1 - E[stem multiply-adds] / the whole stem's, differentiable in the stem's log_alpha.</summary>
    public Tensor ExpectedStemSparsity()
    {
        if (!HasStem) throw new InvalidOperationException("These masks do not gate the stem.");
        return StemCost.ExpectedSparsity(_config, StemRows.Select(r => HardConcrete.KeepProbability(r).sum()).ToList());
    }

    /// <summary>
    /// The stem's widths in the final masks: each row's expected width Σ P(keep), rounded to the nearest multiple of
    /// <see cref="StemMultiple"/>, at least that multiple (a row is never emptied: the stem has no residual) and at most
    /// the row's width.
    /// </summary>
    public int[] FinalStemWidths()
    {
        using var _ = torch.no_grad();
        return StemRows.Select(r =>
        {
            int width = (int)r.shape[0];
            double expected = HardConcrete.KeepProbability(r).sum().item<float>();
            int m = Math.Min(StemMultiple, width);
            return Math.Clamp((int)Math.Round(expected / m, MidpointRounding.AwayFromZero) * m, m, width);
        }).ToArray();
    }

    /// <summary>The stem's multiply-add sparsity of the final masks (<see cref="FinalStemWidths"/>).</summary>
    public double FinalStemSparsity() =>
        1 - StemCost.Macs(_config, FinalStemWidths().Select(w => (double)w).ToList()) / StemCost.Macs(_config);

    /// <summary>Parameters per attention head: (4 D^2 + 4 D) / heads.</summary>
    public double ParamsPerHead => (4.0 * _config.Hidden * _config.Hidden + 4.0 * _config.Hidden) / _config.Heads;

    /// <summary>Parameters per FFN neuron: 2 D + (D + 4 D) / F.</summary>
    public double ParamsPerNeuron => 2.0 * _config.Hidden + 5.0 * _config.Hidden / _config.Intermediate;

    private IEnumerable<(string Modality, Parameter LogAlpha, double PerUnit, int Repeat, bool IsHead)> Rows()
    {
        int crossRepeat = _config.Task == VlmTask.Nlvr2 ? 2 : 1; // a shared pair row gates two blocks
        foreach (var (m, p, r) in new (string, Parameter?, int)[]
                 {
                     ("vision", vision_heads, 1), ("text", text_heads, 1), ("fusion", fusion_heads, 1), ("fusion", fusion_cross_heads, crossRepeat),
                     ("decoder", decoder_heads, 1), ("decoder", decoder_cross_heads, 1),
                 })
            if (p is not null) yield return (m, p, ParamsPerHead, r, true);
        foreach (var (m, p) in new (string, Parameter?)[] { ("vision", vision_ffn), ("text", text_ffn), ("fusion", fusion_ffn), ("decoder", decoder_ffn) })
            if (p is not null) yield return (m, p, ParamsPerNeuron, 1, false);
    }

    /// <summary>All prunable parameters (every head and every FFN neuron).</summary>
    public double Prunable => Rows().Sum(r => r.LogAlpha.numel() * r.PerUnit * r.Repeat);

    /// <summary>E[size] / prunable, and ŝ = 1 - that, differentiable in log_alpha.</summary>
    public Tensor ExpectedSparsity() => Sparsity(Rows());

    /// <summary>ŝ of <paramref name="rows"/>: 1 - their E[size] over their prunable parameters.</summary>
    private static Tensor Sparsity(IEnumerable<(string Modality, Parameter LogAlpha, double PerUnit, int Repeat, bool IsHead)> rows)
    {
        Tensor? size = null;
        double prunable = 0;
        foreach (var (_, logAlpha, perUnit, repeat, _) in rows)
        {
            var term = HardConcrete.KeepProbability(logAlpha).sum().mul(perUnit * repeat);
            size = size is null ? term : size.add(term);
            prunable += logAlpha.numel() * perUnit * repeat;
        }
        return size!.div(prunable).neg().add(1);
    }

    /// <summary>The modalities that have gates, in a fixed order (vision, text, fusion, and decoder for VQA and captioning).</summary>
    public IReadOnlyList<string> Modalities => Rows().Select(r => r.Modality).Distinct().ToList();

    /// <summary>The expected sparsity of each of <see cref="Modalities"/> (its own E[size] over its own prunable parameters), as one vector.</summary>
    public Tensor ExpectedSparsityPerModality()
    {
        var rows = Rows().ToList();
        return torch.stack(Modalities.Select(m => Sparsity(rows.Where(r => r.Modality == m))));
    }

    /// <summary>The expected kept fraction of heads and neurons per modality, and the expected sparsity (for reports and progress).</summary>
    public PruningSize Report(bool deterministic = false)
    {
        using var _ = torch.no_grad();
        var zeros = deterministic ? ZeroCounts() : null;
        var heads = new Dictionary<string, (double Kept, double Total)>();
        var neurons = new Dictionary<string, (double Kept, double Total)>();
        double expected = 0;
        foreach (var (modality, logAlpha, perUnit, repeat, isHead) in Rows())
        {
            double kept = deterministic ? logAlpha.numel() - zeros![logAlpha].Sum() : HardConcrete.KeepProbability(logAlpha).sum().item<float>();
            var into = isHead ? heads : neurons;
            var (k, t) = into.GetValueOrDefault(modality);
            into[modality] = (k + kept * repeat, t + logAlpha.numel() * repeat);
            expected += kept * perUnit * repeat;
        }
        return new PruningSize(1 - expected / Prunable,
            heads.ToDictionary(kv => kv.Key, kv => kv.Value.Kept / kv.Value.Total),
            neurons.ToDictionary(kv => kv.Key, kv => kv.Value.Kept / kv.Value.Total), expected, Prunable);
    }

    /// <summary>Keeps log_alpha inside [ln 0.01, ln 100] after each step.</summary>
    public void Clamp()
    {
        using var _ = torch.no_grad();
        foreach (var p in parameters()) p.clamp_(HardConcrete.MinLogAlpha, HardConcrete.MaxLogAlpha);
    }

    /// <summary>One hard-concrete sample of every gate, shared by the batch (training).</summary>
    public ModelGates Sample() => Gates(HardConcrete.Sample, HasStem ? StemRows.Select(HardConcrete.Sample).ToArray() : null);

    /// <summary>
    /// The final binary masks (deterministic; see <see cref="HardConcrete.DeterministicRow"/>), with the number of
    /// zeros of every row from <see cref="ZeroCounts"/>.
    /// </summary>
    public ModelGates DeterministicGates()
    {
        var zeros = ZeroCounts();
        var stem = HasStem ? StemRows.Zip(FinalStemWidths(), (r, w) => Deterministic(r.view(1, -1), [(int)r.shape[0] - w]).view(-1)).ToArray() : null;
        return Gates(logAlpha => Deterministic(logAlpha, zeros[logAlpha]), stem);
    }

    /// <summary>
    /// How many units each row loses in the final masks: each row's expected zeros (size - sum P(z != 0)), rounded
    /// jointly so that the parameters pruned in all rows together come as near their expected total as whole units
    /// allow: each row rounded down, then, rows with the largest remainders first, a unit more wherever that brings the
    /// total nearer, which leaves it within half of the largest unit (half a head; a head for NLVR2's shared cross-head
    /// rows, which gate two blocks). The method rounds each row alone, which at 4 heads a layer moves the final sparsity by up to
    /// 0.03 from the expected one the controller holds at the target (docs/pruning.md, "The controller").
    /// </summary>
    private Dictionary<Tensor, int[]> ZeroCounts()
    {
        using var _ = torch.no_grad();
        var rows = new List<(Tensor LogAlpha, double Expected, double Cost)>();
        foreach (var (_, logAlpha, perUnit, repeat, _) in Rows())
        {
            using var keep = HardConcrete.KeepProbability(logAlpha).sum(1).cpu().to(ScalarType.Float64);
            var width = logAlpha.shape[1];
            rows.AddRange(keep.data<double>().ToArray().Select(kept => ((Tensor)logAlpha, width - kept, perUnit * repeat)));
        }
        var counts = rows.Select(r => (int)Math.Floor(r.Expected)).ToArray();
        double left = rows.Select((r, i) => r.Cost * (r.Expected - counts[i])).Sum(); // parameters still to prune
        foreach (var i in Enumerable.Range(0, rows.Count).OrderByDescending(i => rows[i].Expected - counts[i]).ThenBy(i => i))
        {
            if (rows[i].Cost >= 2 * left) continue; // one more unit here would overshoot more than it covers
            counts[i]++;
            left -= rows[i].Cost;
        }
        var result = new Dictionary<Tensor, int[]>(ReferenceEqualityComparer.Instance);
        int at = 0;
        foreach (var group in rows.GroupBy(r => r.LogAlpha, ReferenceEqualityComparer.Instance))
        {
            int n = group.Count();
            result[(Tensor)group.Key!] = counts[at..(at + n)];
            at += n;
        }
        return result;
    }

    private static Tensor Deterministic(Tensor logAlpha, int[] zeros)
    {
        var rows = logAlpha.detach().cpu().to(ScalarType.Float32);
        var result = new float[rows.numel()];
        int width = (int)rows.shape[1];
        for (int r = 0; r < rows.shape[0]; r++)
            HardConcrete.DeterministicRow(rows[r].data<float>().ToArray(), zeros[r]).CopyTo(result, r * width);
        return torch.tensor(result, device: logAlpha.device).view(rows.shape);
    }

    private ModelGates Gates(Func<Tensor, Tensor> make, Tensor[]? stem)
    {
        LayerGates[]? Stack(Parameter? heads, Parameter? cross, Parameter? ffn, bool pairs)
        {
            if (ffn is null) return null;
            var h = heads is null ? null : make(heads);
            var c = cross is null ? null : make(cross);
            var f = make(ffn);
            return Enumerable.Range(0, (int)ffn.shape[0]).Select(i =>
                new LayerGates(h?[i], c?[pairs ? i / 2 : i], f[i])).ToArray();
        }
        return new ModelGates
        {
            Vision = Stack(vision_heads, null, vision_ffn, false),
            Text = Stack(text_heads, null, text_ffn, false),
            Fusion = Stack(fusion_heads, fusion_cross_heads, fusion_ffn, _config.Task == VlmTask.Nlvr2),
            Decoder = Stack(decoder_heads, decoder_cross_heads, decoder_ffn, false),
            Stem = stem,
        };
    }
}
