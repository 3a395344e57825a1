using EfficientVlm.Model.Config;
using EfficientVlm.Model.Modules;
using EfficientVlm.Model.Pruning;
using EfficientVlm.Model.Tasks;
using TorchSharp;
using static TorchSharp.torch;

namespace EfficientVlm.Fleet.Tests.Pruning;

[Collection(TorchCollection.Name)]
public sealed class PruningTests
{
    private static readonly VlmConfig VqaTiny = Presets.Tiny with { Task = VlmTask.Vqa };

    [Fact]
    public void Keep_probability_and_sampling_follow_the_hard_concrete_formulas()
    {
        using var scope = torch.NewDisposeScope();
        // P(z != 0) = sigmoid(log_alpha - beta * ln(0.1 / 1.1)); at log_alpha = 0: sigmoid(1.5986) = 0.8318
        Assert.Equal(0.8318, HardConcrete.KeepProbability(torch.tensor(0f)).item<float>(), 3);
        torch.manual_seed(1);
        var z = HardConcrete.Sample(torch.zeros(10000));
        Assert.True(z.min().item<float>() >= 0 && z.max().item<float>() <= 1);
        var nonzero = z.gt(0).to(ScalarType.Float32).mean().item<float>();
        Assert.InRange(nonzero, 0.82, 0.845); // matches P(z != 0) empirically
        Assert.InRange(z.eq(1).to(ScalarType.Float32).mean().item<float>(), 0.1, 0.9); // stretched: exact ones occur
    }

    [Fact]
    public void Final_masks_zero_the_expected_number_of_lowest_scores_deterministically()
    {
        // P(keep) per entry: 4.6 -> 0.998, 0 -> 0.832, -4.6 -> 0.047, -1 -> 0.646; sum 2.523 of 4:
        // round(4 - 2.523) = 1 zero, at the lowest score (-4.6).
        Assert.Equal([1f, 1f, 0f, 1f], HardConcrete.DeterministicRow([4.6f, 0f, -4.6f, -1f]));
        // all very negative: round(4 - 4 * 0.047) = 4 zeros
        Assert.Equal([0f, 0f, 0f, 0f], HardConcrete.DeterministicRow([-4.6f, -4.6f, -4.6f, -4.6f]));
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(2);
        using var masks = new PruningMasks(VqaTiny);
        var a = ModelKeep.FromGates(masks.DeterministicGates());
        var b = ModelKeep.FromGates(masks.DeterministicGates());
        Assert.Equal(a.Fusion!.Select(l => l.Ffn.Length), b.Fusion!.Select(l => l.Ffn.Length));
        Assert.Equal(a.Decoder!.SelectMany(l => l.CrossHeads), b.Decoder!.SelectMany(l => l.CrossHeads));
    }

    [Fact]
    public void Final_masks_round_all_rows_together_so_their_size_is_the_expected_one()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(7);
        using var masks = new PruningMasks(Presets.Get("cpu") with { Task = VlmTask.Vqa });
        // every head keeps with P 0.9 (log_alpha = logit 0.9 + beta ln(-l/r)): each 4-head row expects 0.4 of a zero,
        // which rounded row by row (the method) prunes no head at all
        double headLogAlpha = Math.Log(0.9 / 0.1) + HardConcrete.Beta * Math.Log(-HardConcrete.Left / HardConcrete.Right);
        using (torch.no_grad())
            foreach (var (name, p) in masks.named_parameters())
                p.copy_(name.EndsWith("heads") ? torch.normal(headLogAlpha, 1e-3, p.shape) : torch.normal(-0.5, 1.0, p.shape));
        Assert.All(masks.named_parameters().Where(p => p.name.EndsWith("heads")),
            p => Assert.Equal(0f, HardConcrete.DeterministicRow(p.parameter[0].data<float>().ToArray()).Count(z => z == 0f)));

        double expected = masks.Report().ExpectedSparsity, final = masks.Report(deterministic: true).ExpectedSparsity;
        Assert.True(Math.Abs(final - expected) <= 0.5 * masks.ParamsPerHead / masks.Prunable,
            $"final sparsity {final:0.0000}, expected {expected:0.0000}: more than half a head apart");
        // the gates are those masks: about 4 head rows in 10 lose one head
        var gates = masks.DeterministicGates();
        var headRows = new[] { gates.Vision, gates.Text, gates.Fusion, gates.Decoder }.SelectMany(s => s!)
            .SelectMany(l => new[] { l.Heads, l.CrossHeads }).Where(h => h is not null).ToList();
        int prunedHeads = headRows.Sum(h => h!.data<float>().Count(z => z == 0f));
        Assert.InRange(prunedHeads, 1, headRows.Count / 2);
    }

    [Fact]
    public void Expected_size_uses_the_per_unit_parameter_counts()
    {
        using var scope = torch.NewDisposeScope();
        using var masks = new PruningMasks(Presets.PaperStudent with { Task = VlmTask.Retrieval }, torch.device("meta"));
        Assert.Equal(196_864, masks.ParamsPerHead);          // method.md: (4 D^2 + 4 D) / heads at D 768
        Assert.Equal(1_537.25, masks.ParamsPerNeuron);        // 2 D + 5 D / F (the reference rounds down to 1,537)
        // 15 attention blocks (6 vision + 3 text + 3 fusion self + 3 cross) and 12 FFNs
        Assert.Equal(15 * 12 * 196_864 + 12 * 3072 * 1_537.25, masks.Prunable);
    }

    [Fact]
    public void The_lagrangian_drives_expected_sparsity_to_the_target_and_the_lambdas_grow_meanwhile()
    {
        torch.manual_seed(3);
        using var masks = new PruningMasks(VqaTiny);
        using var controller = new SparsityController(masks, target: 0.5, warmupSteps: 40, learningRate: 0.05);
        double start = masks.ExpectedSparsity().item<float>();
        Assert.True(start < 0.5);
        double lambda1Before = 0, lambda2Before = 0;
        int checkedSteps = 0;
        bool grew = true;
        for (int step = 0; step < 400; step++)
        {
            using var scope = torch.NewDisposeScope();
            controller.ZeroGrad();
            var (loss, sparsity) = controller.Lagrangian(step);
            loss.backward();
            controller.Step();
            // well below the target the pressure must keep rising: lambda1 falls (its term rewards sparsity)
            // and lambda2 rises
            if (sparsity.item<float>() < controller.TargetAt(step) - 0.05)
            {
                if (checkedSteps++ > 0) grew &= controller.Lambda1 < lambda1Before && controller.Lambda2 > lambda2Before;
            }
            lambda1Before = controller.Lambda1;
            lambda2Before = controller.Lambda2;
        }
        Assert.True(checkedSteps > 5, "the run must spend some steps below the target");
        Assert.True(grew, "the lambdas must push harder while the expected sparsity is below the target");
        double final = masks.ExpectedSparsity().item<float>();
        Assert.True(Math.Abs(final - 0.5) <= 0.02, $"expected sparsity {final:0.000}, target 0.5 (started at {start:0.000})");
        var report = masks.Report();
        Assert.Equal(final, report.ExpectedSparsity, 3);
        Assert.Equal(["decoder", "fusion", "text", "vision"], report.KeptHeads.Keys.Order());
    }

    /// <summary>
    /// A short pruning run as the fleet makes it (mask rate 0.1, warm-up a quarter of the run) against a stand-in for the
    /// KD loss: a pull towards keeping every gate, stronger for some. Returns how far the expected sparsity went past the
    /// target after the warm-up, and the largest gap from twice the warm-up on.
    /// </summary>
    private static (double Overshoot, double LateGap) ShortRun(double target, int warmup, int steps, double damping)
    {
        torch.manual_seed(5);
        using var masks = new PruningMasks(Presets.Get("cpu") with { Task = VlmTask.Vqa });
        var importance = masks.parameters().Select(p => torch.rand(p.shape).mul(2)).ToList();
        long gates = masks.parameters().Sum(p => p.numel());
        using var controller = new SparsityController(masks, target, warmup, learningRate: 0.1, damping: damping);
        Assert.Equal(masks.ExpectedSparsity().item<float>(), controller.TargetAt(0), 5);   // the ramp starts where the masks are
        double overshoot = 0, lateGap = 0;
        for (int step = 0; step < steps; step++)
        {
            using var scope = torch.NewDisposeScope();
            controller.ZeroGrad();
            var pull = masks.parameters().Select((p, i) => importance[i].mul(HardConcrete.Sample(p).neg().add(1).pow(2)).sum())
                .Aggregate((a, b) => a.add(b)).div(gates);
            var (lagrangian, sparsity) = controller.Lagrangian(step);
            pull.add(lagrangian).backward();
            controller.Step();
            double s = sparsity.item<float>();
            if (step >= warmup) overshoot = Math.Max(overshoot, s - target);
            if (step >= 2 * warmup) lateGap = Math.Max(lateGap, Math.Abs(s - target));
        }
        return (overshoot, lateGap);
    }

    [Theory]
    [InlineData(0.35, 32, 128)]
    [InlineData(0.35, 63, 252)]
    [InlineData(0.25, 63, 252)]
    public void A_short_run_reaches_its_target_without_overshooting_it(double target, int warmup, int steps)
    {
        var (overshoot, lateGap) = ShortRun(target, warmup, steps, SparsityController.DefaultDamping);
        Assert.True(overshoot <= 0.03, $"expected sparsity went {overshoot:0.000} past the target {target}");
        Assert.True(lateGap <= 0.02, $"expected sparsity still {lateGap:0.000} from the target {target} after twice the warm-up");
    }

    [Fact]
    public void Without_damping_the_same_short_run_overshoots()
    {
        // the cause the damping fixes: lambda1 integrates the gap, the gates integrate lambda1, nothing damps the loop
        var (overshoot, _) = ShortRun(0.35, 32, 128, damping: 0);
        Assert.True(overshoot > 0.1, $"undamped overshoot {overshoot:0.000}");
    }

    [Fact]
    public void The_ramp_start_survives_save_and_load()
    {
        var dir = Directory.CreateTempSubdirectory("fleet-controller-").FullName;
        torch.manual_seed(6);
        using var masks = new PruningMasks(VqaTiny);
        using var controller = new SparsityController(masks, 0.4, warmupSteps: 10, learningRate: 0.1);
        double start = controller.TargetAt(0);
        for (int step = 0; step < 20; step++)
        {
            using var scope = torch.NewDisposeScope();
            controller.ZeroGrad();
            controller.Lagrangian(step).Loss.backward();
            controller.Step();
        }
        controller.Save(dir);
        using var resumed = new SparsityController(masks, 0.4, warmupSteps: 10, learningRate: 0.1);
        Assert.NotEqual(start, resumed.TargetAt(0), 3);   // the masks have moved since
        resumed.Load(dir);
        Directory.Delete(dir, recursive: true);
        Assert.Equal(start, resumed.TargetAt(0), 6);
        Assert.Equal(controller.Lambda2, resumed.Lambda2, 6);
    }

    [Fact]
    public void One_global_target_lets_a_task_keep_the_modality_it_needs_and_uniform_targets_hold_every_modality_at_the_target()
    {
        // A stand-in task loss that grows as vision is pruned: under the global target the other modalities give
        // more instead (modal-adaptive); under the uniform ablation each modality is held at the target by its own lambdas.
        (double Total, Dictionary<string, double> PerModality) Run(SparsityMode mode)
        {
            torch.manual_seed(3);
            using var masks = new PruningMasks(VqaTiny);
            using var controller = new SparsityController(masks, target: 0.5, warmupSteps: 40, learningRate: 0.05, mode: mode);
            int vision = masks.Modalities.ToList().IndexOf("vision");
            for (int step = 0; step < 600; step++)
            {
                using var scope = torch.NewDisposeScope();
                controller.ZeroGrad();
                var (lagrangian, _) = controller.Lagrangian(step);
                lagrangian.add(masks.ExpectedSparsityPerModality()[vision].mul(0.5)).backward();
                controller.Step();
            }
            using var noGrad = torch.no_grad();
            using var perModality = masks.ExpectedSparsityPerModality();
            var values = perModality.data<float>().ToArray();
            return (masks.ExpectedSparsity().item<float>(), masks.Modalities.Select((m, i) => (m, (double)values[i])).ToDictionary());
        }

        var global = Run(SparsityMode.Global);
        var uniform = Run(SparsityMode.Uniform);
        string Show((double Total, Dictionary<string, double> PerModality) r) =>
            $"total {r.Total:0.000}: " + string.Join(", ", r.PerModality.Select(kv => $"{kv.Key} {kv.Value:0.000}"));
        Assert.True(Math.Abs(global.Total - 0.5) <= 0.02, Show(global));
        Assert.All(uniform.PerModality.Values, v => Assert.True(Math.Abs(v - 0.5) <= 0.03, Show(uniform)));
        Assert.True(global.PerModality["vision"] < uniform.PerModality["vision"] - 0.1, $"global {Show(global)}; uniform {Show(uniform)}");
        Assert.Contains(global.PerModality, kv => kv.Key != "vision" && kv.Value > 0.55);
    }

    [Fact]
    public void The_model_shrunk_by_the_final_masks_equals_the_masked_model_even_with_empty_layers()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        torch.manual_seed(4);
        using var model = new VlmModel(VqaTiny);
        model.eval();
        using var masks = new PruningMasks(VqaTiny);
        // push some rows to "prune everything" and the rest to a mixture
        foreach (var (name, p) in masks.named_parameters())
        {
            p.copy_(torch.randn(p.shape).mul(3));
            if (name == "vision_heads") p[0].fill_(HardConcrete.MinLogAlpha);  // vision layer 0 loses every head
            if (name == "fusion_ffn") p[1].fill_(HardConcrete.MinLogAlpha);    // fusion layer 1 keeps round(37 * 0.047) = 2 neurons
        }
        var gates = masks.DeterministicGates();
        Assert.Equal(0, gates.Vision![0].Heads!.sum().item<float>());
        Assert.Equal(2, gates.Fusion![1].Ffn!.sum().item<float>());
        gates.Fusion[1] = gates.Fusion[1] with { Ffn = torch.zeros(VqaTiny.Intermediate) }; // and a layer with nothing left at all

        var images = torch.randn(2, 3, 24, 24);
        var ids = torch.randint(5, VqaTiny.VocabSize, new long[] { 2, 6 });
        var padding = torch.ones(2, 6, dtype: ScalarType.Int64);
        var answers = torch.randint(5, VqaTiny.VocabSize, new long[] { 3, 4 });
        var answerPadding = torch.ones(3, 4, dtype: ScalarType.Int64);
        Tensor Score(VlmModel m, ModelGates? g)
        {
            var q = Vqa.EncodeQuestion(m, images, ids, padding, g);
            return Vqa.AnswerNll(m, q.index_select(0, torch.tensor(new long[] { 0, 1, 1 })), padding.index_select(0, torch.tensor(new long[] { 0, 1, 1 })), answers, answerPadding, g);
        }
        var masked = Score(model, gates);
        using var shrunk = Shrinker.Shrink(model, ModelKeep.FromGates(gates));
        Assert.Equal(0, shrunk.Config.Pruned!.Vision![0].Heads);
        Assert.Equal(0, shrunk.Config.Pruned!.Fusion![1].FfnWidth);
        var small = Score(shrunk, null);
        Assert.True(masked.sub(small).abs().max().item<float>() <= 1e-4f, "shrunk must equal masked");
    }

    [Fact]
    public void Nlvr2_pairs_share_one_cross_head_row_so_the_shared_key_value_stays_consistent()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(5);
        var config = Presets.Tiny with { Task = VlmTask.Nlvr2 };
        using var masks = new PruningMasks(config);
        foreach (var p in masks.parameters()) using (torch.no_grad()) p.copy_(torch.randn(p.shape).mul(3));
        var gates = masks.DeterministicGates();
        for (int i = 1; i < gates.Fusion!.Length; i += 2)
            Assert.True(gates.Fusion[i].CrossHeads!.equal(gates.Fusion[i - 1].CrossHeads!).all().item<bool>());
        using var model = new VlmModel(config);
        using var shrunk = Shrinker.Shrink(model, ModelKeep.FromGates(gates)); // would throw if a pair disagreed
        Assert.Equal(2 * config.FusionLayers, shrunk.Fusion.Count);
    }
}
