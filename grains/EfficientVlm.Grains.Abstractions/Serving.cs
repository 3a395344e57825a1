namespace EfficientVlm.Grains.Abstractions;

/// <summary>What a client needs to call a ready variant: its task, its model and how many replicas serve it.</summary>
[GenerateSerializer, Immutable]
public sealed record ServingInfo(
    [property: Id(0)] string VariantId,
    [property: Id(1)] FleetTask Task,
    [property: Id(2)] string Model,
    [property: Id(3)] int Replicas);

/// <summary>A replica's counters since it was activated.</summary>
[GenerateSerializer, Immutable]
public sealed record ReplicaStats(
    [property: Id(0)] string Silo,
    [property: Id(1)] long Requests,
    [property: Id(2)] long Batches,
    [property: Id(3)] int LargestBatch,
    [property: Id(4)] double MeanBatch,
    [property: Id(5)] double MeanQueueMilliseconds,
    [property: Id(6)] long Failures);

/// <summary>
/// One replica of a ready variant (key: <c>&lt;variant id&gt;#&lt;index&gt;</c>), placed on a GPU silo. It loads
/// the variant's shrunk model through the silo's model cache and batches concurrent calls
/// dynamically (architecture.md decision 5). Bad input fails with an <see cref="ArgumentException"/>
/// whose message says what is wrong; the replica and its silo carry on.
/// </summary>
public interface IInferenceReplicaGrain : IGrainWithStringKey
{
    /// <summary>VQA: the answer to <paramref name="question"/> about the image (PNG or JPEG bytes).</summary>
    Task<string> Answer(byte[] image, string question);

    /// <summary>NLVR2: whether <paramref name="statement"/> is true of the left and right images.</summary>
    Task<bool> Verify(byte[] left, byte[] right, string statement);

    /// <summary>Captioning: a caption of the image.</summary>
    Task<string> Caption(byte[] image);

    /// <summary>Loads the model if it is not loaded (aliases move only to warm variants).</summary>
    Task Warm();

    Task<ReplicaStats> Stats();

    public static string Key(string variant, int index) => $"{variant}#{index}";
}
