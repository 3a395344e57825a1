using System.Text.Json;
using EfficientVlm.Grains.Abstractions;
using EfficientVlm.Grains.Jobs;
using EfficientVlm.Model.Jobs;
using EfficientVlm.Model.Training;

namespace EfficientVlm.Fleet.Tests.Grains;

/// <summary>A fleet job's budgets reach the pipeline whole, and read from JSON as the REST gateway reads them.</summary>
public sealed class JobSettingsTests
{
    /// <summary>Every budget set away from its default (so a budget the mapping drops shows as a default).</summary>
    private static readonly JobSettings Changed = new()
    {
        DistillEpochs = 2, FineTuneEpochs = 3, PruneEpochs = 4, PruneWarmupEpochs = 2, BatchSize = 16, LearningRate = 3e-4,
        PruneLearningRate = 5e-4, MaskLearningRate = 0.05, TrainLimit = 100, EvalLimit = 50, CheckpointEvery = 7, Seed = 9,
        WarmupFraction = 0.05, Decay = RateDecay.Cosine, StemTarget = 0.6, FrozenMaskEpochs = 1,
    };

    [Fact]
    public void Every_budget_of_a_job_reaches_the_pipeline_under_its_name()
    {
        var defaults = new JobSettings();
        var pipeline = Changed.ToPipeline();
        foreach (var budget in typeof(JobSettings).GetProperties())
        {
            var given = budget.GetValue(Changed);
            Assert.NotEqual(budget.GetValue(defaults), given);   // the test changes every budget
            var reached = typeof(PipelineSettings).GetProperty(budget.Name)?.GetValue(pipeline);
            Assert.True(reached is not null, $"PipelineSettings has no {budget.Name}");
            Assert.Equal(given!.ToString(), reached.ToString());   // enums of the two layers compare by name
        }
        Assert.Equal(LrDecay.Cosine, pipeline.Decay);
    }

    public static TheoryData<string, string> Absurd() => new()
    {
        { """{"DistillEpochs":2147483647}""", "at most 100 epochs" },
        { """{"PruneEpochs":0}""", "at least one epoch" },
        { """{"LearningRate":"NaN"}""", "must be positive" },
        { """{"MaskLearningRate":1e6}""", "at most 1" },
        { """{"WarmupFraction":"NaN"}""", "warm-up fraction" },
        { """{"PruneWarmupEpochs":"Infinity"}""", "sparsity warm-up" },
        { """{"TrainLimit":2147483647}""", "Record limits" },
        { """{"EvalLimit":0}""", "Record limits" },
        { """{"CheckpointEvery":0}""", "CheckpointEvery" },
        { """{"BatchSize":100000}""", "Batch size 100000" },
        { """{"StemTarget":1}""", "stem's target" },
        { """{"FrozenMaskEpochs":3}""", "FrozenMaskEpochs" },
        { """{"StemTarget":"NaN"}""", "stem's target" },
    };

    [Theory]
    [MemberData(nameof(Absurd))]
    public void An_absurd_budget_is_refused_with_what_is_wrong(string json, string message)
    {
        var read = JsonSerializer.Deserialize<JobSettings>(json, new JsonSerializerOptions
            { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals })!;
        var e = Assert.Throws<ArgumentException>(() => read.ToPipeline());
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void The_decay_reads_from_JSON_by_name_and_a_bad_warmup_is_refused()
    {
        var read = JsonSerializer.Deserialize<JobSettings>("""{"Decay":"Cosine","WarmupFraction":0.05}""")!;
        Assert.Equal(RateDecay.Cosine, read.Decay);
        Assert.Equal(0.05, read.WarmupFraction);
        Assert.Contains("Decay Cosine (Linear)", read.Differences(new JobSettings()));
        Assert.Contains("StemTarget 0.6 (off)", (new JobSettings() with { StemTarget = 0.6 }).Differences(new JobSettings()));
        var e = Assert.Throws<ArgumentException>(() => (new JobSettings() with { WarmupFraction = 1 }).ToPipeline());
        Assert.Contains("warm-up fraction", e.Message);
    }
}
