using EfficientVlm.Model.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace EfficientVlm.Model.Pruning;

/// <summary>
/// The Lagrangian that holds the expected sparsity at one global target (method.md section 4):
/// L_lag = lambda1 (s - t) + lambda2 (s - t)^2, the step being the global one (reference bug 2 fixed). The
/// log_alphas are minimised by one AdamW, the lambdas maximised (gradient ascent) by another; neither is in the
/// model's optimiser (bug 4).
/// Two departures from the method, against the overshoot of short runs (docs/pruning.md, "The controller"):
/// the target ramps from the sparsity the masks start at, t(step) = s0 + (target - s0) min(1, step / warmup),
/// not from 0 (from 0 the gap starts positive and lambda1 first learns to keep); and lambda2 starts at
/// <see cref="DefaultDamping"/>, not 0, so the quadratic term damps the loop from the first step (lambda2 only
/// grows, so this is its floor). With lambda1 the integral of the gap and the gates the integral of lambda1, the
/// loop is otherwise undamped, and a ramp faster than the gates can follow is repaid by an overshoot.
/// When the masks gate the conv stem, a second term of the same form holds the stem's expected multiply-add sparsity at
/// its own target (<see cref="StemTarget"/>), with its own lambdas and ramp (docs/stem-pruning-plan.md).
/// </summary>
public sealed class SparsityController : IDisposable
{
    private readonly Parameter _lambda1;
    private readonly Parameter _lambda2;
    private readonly Parameter? _stemLambda1, _stemLambda2;
    private float _stemStart;
    private readonly AdamW _masksOptimizer;
    private readonly AdamW _lambdaOptimizer;

    /// <summary>lambda2's starting value: the simulated loop of docs/pruning.md stays within 0.02 of its target with it.</summary>
    public const double DefaultDamping = 300;

    /// <summary>The expected sparsity at the start: one value, or one per modality in the uniform mode.</summary>
    private float[] _start;

    public SparsityController(PruningMasks masks, double target, int warmupSteps, double learningRate = 0.01, Device? device = null,
        SparsityMode mode = SparsityMode.Global, double damping = DefaultDamping, double? stemTarget = null)
    {
        if (damping < 0) throw new ArgumentException($"The damping must not be negative; got {damping}.");
        if (target is < 0 or >= 1) throw new ArgumentException($"The target sparsity must be in [0, 1); got {target}.");
        if (stemTarget is { } st && !(st > 0 && st < 1)) throw new ArgumentException($"The stem's target sparsity must be in (0, 1); got {st}.");
        if (masks.HasStem != stemTarget.HasValue)
            throw new ArgumentException(masks.HasStem ? "These masks gate the stem: give the stem a target." : "A stem target needs masks that gate the stem.");
        StemTarget = stemTarget;
        Masks = masks;
        Target = target;
        WarmupSteps = Math.Max(0, warmupSteps);
        Mode = mode;
        // the controller outlives any dispose scope it is created in (e.g. a device-executor work item);
        // one pair of lambdas for the global target, one pair per modality for the uniform ablation
        long[] shape = mode == SparsityMode.Global ? [] : [masks.Modalities.Count];
        _lambda1 = new Parameter(torch.zeros(shape, device: device));
        _lambda2 = new Parameter(torch.full(shape, damping, device: device));
        using (torch.no_grad())
        using (var start = mode == SparsityMode.Global ? masks.ExpectedSparsity() : masks.ExpectedSparsityPerModality())
            _start = start.cpu().data<float>().ToArray();
        _lambda1.DetachFromDisposeScope();
        _lambda2.DetachFromDisposeScope();
        List<Parameter> lambdas = [_lambda1, _lambda2];
        if (stemTarget is not null)
        {
            _stemLambda1 = new Parameter(torch.zeros(Array.Empty<long>(), device: device));
            _stemLambda2 = new Parameter(torch.full(Array.Empty<long>(), damping, device: device));
            _stemLambda1.DetachFromDisposeScope();
            _stemLambda2.DetachFromDisposeScope();
            using (torch.no_grad())
            using (var start = masks.ExpectedStemSparsity())
                _stemStart = start.cpu().item<float>();
            lambdas.AddRange([_stemLambda1, _stemLambda2]);
        }
        _masksOptimizer = torch.optim.AdamW(masks.parameters(), learningRate, weight_decay: 0);
        _lambdaOptimizer = torch.optim.AdamW(lambdas, learningRate, weight_decay: 0, maximize: true);
    }

    public PruningMasks Masks { get; }
    public double Target { get; }
    /// <summary>The target of the stem's expected multiply-add sparsity; null when the stem is not pruned.</summary>
    public double? StemTarget { get; }
    public int WarmupSteps { get; }
    public SparsityMode Mode { get; }
    /// <summary>λ1 (the mean over modalities in the uniform mode).</summary>
    public double Lambda1 => Mean(_lambda1);
    /// <summary>λ2 (the mean over modalities in the uniform mode).</summary>
    public double Lambda2 => Mean(_lambda2);

    private static double Mean(Tensor lambdas)
    {
        using var mean = lambdas.mean(); // freed here, not left to the finalizer when read outside a dispose scope
        return mean.item<float>();
    }

    /// <summary>The expected sparsity the masks started at (the mean over modalities in the uniform mode), where the ramp begins.</summary>
    public double StartSparsity => _start.Average();

    /// <summary>How far along the ramp a global step is (0 at the start, 1 from the end of the warm-up).</summary>
    private double Ramp(int step) => WarmupSteps == 0 ? 1 : Math.Min(1.0, step / (double)WarmupSteps);

    /// <summary>A target <paramref name="target"/> ramped from where the masks started, <paramref name="start"/>, at a global step.</summary>
    private double Ramped(double start, double target, int step) => start + (target - start) * Ramp(step);

    /// <summary>The target in force at a global step (the mean over modalities in the uniform mode).</summary>
    public double TargetAt(int step) => Ramped(StartSparsity, Target, step);

    /// <summary>The stem's target in force at a global step (ramped from where its masks started, like the global one).</summary>
    public double StemTargetAt(int step) => StemTarget is { } t ? Ramped(_stemStart, t, step) : 0;

    /// <summary>lambda1 gap + lambda2 gap^2, summed (the add has its alpha: no temporary Scalar, docs/platform.md).</summary>
    private static Tensor Penalty(Tensor lambda1, Tensor lambda2, Tensor gap) => lambda1.mul(gap).add(lambda2.mul(gap.mul(gap)), Scalars.One).sum();

    /// <summary>Clears the gradients of masks and lambdas (call with the model's zero_grad).</summary>
    public void ZeroGrad()
    {
        _masksOptimizer.zero_grad();
        _lambdaOptimizer.zero_grad();
    }

    /// <summary>
    /// L_lag at a global step, and the overall expected sparsity. Global: one term on the whole model's
    /// expected sparsity (the method: each modality keeps what the task needs). Uniform (ablation): one term
    /// per modality on that modality's own expected sparsity, all with the same target, summed.
    /// </summary>
    public (Tensor Loss, Tensor ExpectedSparsity) Lagrangian(int step)
    {
        var sparsity = Masks.ExpectedSparsity();
        // no temporary Scalar in this per-step call (docs/platform.md): the targets are tensors made from floats
        var target = torch.tensor(_start.Select(s0 => (float)Ramped(s0, Target, step)).ToArray(), device: sparsity.device);
        var gap = Mode == SparsityMode.Global ? sparsity.sub(target.squeeze()) : Masks.ExpectedSparsityPerModality().sub(target);
        var loss = Penalty(_lambda1, _lambda2, gap);
        if (StemTarget is not null)
        {
            var stemGap = Masks.ExpectedStemSparsity().sub(torch.tensor((float)StemTargetAt(step), device: sparsity.device));
            loss = loss.add(Penalty(_stemLambda1!, _stemLambda2!, stemGap), Scalars.One);
        }
        return (loss, sparsity);
    }

    /// <summary>Steps both optimisers (after backward) and clamps log_alpha.</summary>
    public void Step()
    {
        _masksOptimizer.step();
        _lambdaOptimizer.step();
        Masks.Clamp();
    }

    public void Save(string folder)
    {
        Directory.CreateDirectory(folder);
        _masksOptimizer.save_state_dict(Path.Combine(folder, "masks-optimizer.bin"));
        _lambdaOptimizer.save_state_dict(Path.Combine(folder, "lambda-optimizer.bin"));
        TorchSharp.PyBridge.Safetensors.SaveStateDict(Path.Combine(folder, "masks.safetensors"),
            Masks.state_dict().Concat([new("lambda1", _lambda1), new("lambda2", (Tensor)_lambda2), new("start", torch.tensor(_start))])
                .Concat(StemTarget is null ? [] : [new("stem_lambda1", _stemLambda1!), new("stem_lambda2", (Tensor)_stemLambda2!), new("stem_start", torch.tensor(_stemStart))])
                .ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu().contiguous()));
    }

    public void Load(string folder)
    {
        using var scope = torch.NewDisposeScope();
        var state = TorchSharp.PyBridge.Safetensors.LoadStateDict(Path.Combine(folder, "masks.safetensors"));
        if (state.ContainsKey("stem_lambda1") != StemTarget.HasValue)
            throw new InvalidOperationException(StemTarget.HasValue
                ? $"The pruning state in {folder} was saved without stem gates; this run prunes the stem: start it in a new folder."
                : $"The pruning state in {folder} was saved with stem gates; this run does not prune the stem: give it the stem target again.");
        using (torch.no_grad())
        {
            foreach (var (name, tensor) in Masks.state_dict()) tensor.copy_(state[name]);
            _lambda1.copy_(state["lambda1"]);
            _lambda2.copy_(state["lambda2"]);
            // saved since 2026-12-07; a run saved before ramped from 0, and goes on doing so
            _start = state.TryGetValue("start", out var start) ? start.data<float>().ToArray() : new float[_start.Length];
            if (StemTarget is not null)
            {
                _stemLambda1!.copy_(state["stem_lambda1"]);
                _stemLambda2!.copy_(state["stem_lambda2"]);
                _stemStart = state["stem_start"].item<float>();
            }
        }
        _masksOptimizer.load_state_dict(Path.Combine(folder, "masks-optimizer.bin"));
        _lambdaOptimizer.load_state_dict(Path.Combine(folder, "lambda-optimizer.bin"));
    }

    public void Dispose()
    {
        _masksOptimizer.Dispose();
        _lambdaOptimizer.Dispose();
        _lambda1.Dispose();
        _lambda2.Dispose();
        _stemLambda1?.Dispose();
        _stemLambda2?.Dispose();
    }
}

/// <summary>How the pruning target is enforced.</summary>
public enum SparsityMode
{
    /// <summary>One target on the whole model's expected sparsity (modal-adaptive: the method).</summary>
    Global,

    /// <summary>The same target on every modality's own expected sparsity (the ablation's baseline).</summary>
    Uniform,
}
