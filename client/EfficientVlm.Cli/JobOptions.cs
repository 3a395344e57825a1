using System.CommandLine;
using EfficientVlm.Grains.Abstractions;

namespace EfficientVlm.Cli;

/// <summary>The training budget options of fleet jobs (defaults: <see cref="JobSettings"/>).</summary>
internal sealed class JobOptions
{
    private static readonly JobSettings Defaults = new();
    private readonly Option<int> _distillEpochs = new("--distill-epochs") { DefaultValueFactory = _ => Defaults.DistillEpochs };
    private readonly Option<int> _finetuneEpochs = new("--finetune-epochs") { DefaultValueFactory = _ => Defaults.FineTuneEpochs };
    private readonly Option<int> _pruneEpochs = new("--prune-epochs") { DefaultValueFactory = _ => Defaults.PruneEpochs };
    private readonly Option<double> _warmup = new("--prune-warmup-epochs") { DefaultValueFactory = _ => Defaults.PruneWarmupEpochs };
    private readonly Option<int> _batch = new("--batch") { DefaultValueFactory = _ => Defaults.BatchSize };
    private readonly Option<double> _lr = new("--lr") { Description = "peak rate of distillation and fine-tuning", DefaultValueFactory = _ => Defaults.LearningRate };
    private readonly Option<double> _pruneLr = new("--prune-lr") { Description = "peak rate of the weights while pruning", DefaultValueFactory = _ => Defaults.PruneLearningRate };
    private readonly Option<double> _maskLr = new("--mask-lr") { Description = "rate of the pruning gates and lambdas", DefaultValueFactory = _ => Defaults.MaskLearningRate };
    private readonly Option<int?> _trainLimit = new("--train-limit") { Description = "use only the first N training records" };
    private readonly Option<int?> _evalLimit = new("--eval-limit") { Description = "use only the first N validation/test records" };
    private readonly Option<double> _rateWarmup = new("--warmup") { Description = "warm-up of distillation's and fine-tuning's rate, a fraction of their steps", DefaultValueFactory = _ => Defaults.WarmupFraction };
    private readonly Option<RateDecay> _decay = new("--decay") { Description = "how that rate falls after the warm-up: Linear or Cosine", DefaultValueFactory = _ => Defaults.Decay };
    private readonly Option<int> _checkpointEvery = new("--checkpoint-every") { Description = "upload a resumable checkpoint every N steps", DefaultValueFactory = _ => Defaults.CheckpointEvery };

    private readonly Option<double?> _stemTarget = new("--stem-target") { Description = "also prune the conv stem's channels, to this sparsity of its multiply-adds (e.g. 0.6)" };

    private readonly Option<int?> _frozenMaskEpochs = new("--frozen-mask-epochs") { Description = "freeze the pruning masks in the last N epochs (default: 1 for VQA, 0 for the other tasks)" };

    private Option[] All => [_distillEpochs, _finetuneEpochs, _pruneEpochs, _warmup, _batch, _lr, _pruneLr, _maskLr, _trainLimit, _evalLimit, _checkpointEvery, _rateWarmup, _decay, _stemTarget, _frozenMaskEpochs];

    public void AddTo(Command command)
    {
        foreach (var option in All) command.Options.Add(option);
    }

    /// <summary>The budgets when at least one option was given, else null (a variant that exists keeps the budgets it was made with).</summary>
    public JobSettings? GivenOrNull(ParseResult parse) => All.Any(o => parse.GetResult(o) is { Implicit: false }) ? From(parse) : null;

    public JobSettings From(ParseResult parse) => Defaults with
    {
        DistillEpochs = parse.GetValue(_distillEpochs),
        FineTuneEpochs = parse.GetValue(_finetuneEpochs),
        PruneEpochs = parse.GetValue(_pruneEpochs),
        PruneWarmupEpochs = parse.GetValue(_warmup),
        BatchSize = parse.GetValue(_batch),
        LearningRate = parse.GetValue(_lr),
        PruneLearningRate = parse.GetValue(_pruneLr),
        MaskLearningRate = parse.GetValue(_maskLr),
        TrainLimit = parse.GetValue(_trainLimit),
        EvalLimit = parse.GetValue(_evalLimit),
        CheckpointEvery = parse.GetValue(_checkpointEvery),
        WarmupFraction = parse.GetValue(_rateWarmup),
        Decay = parse.GetValue(_decay),
        StemTarget = parse.GetValue(_stemTarget),
        FrozenMaskEpochs = parse.GetValue(_frozenMaskEpochs),
    };
}
