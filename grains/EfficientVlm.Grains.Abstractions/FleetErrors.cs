namespace EfficientVlm.Grains.Abstractions;

// The fleet's errors by kind, so that callers (the REST gateway above all) tell them apart by type, never by message.
// Each travels from a grain to its caller as itself (Orleans' generated codec over its exception base codec); each
// derives from the exception its callers caught before it existed, so a catch of that still holds. No GPU silo:
// NoGpuSiloException.

/// <summary>No variant (or alias) of that name. REST: 404.</summary>
[GenerateSerializer, Alias("fleet.unknown-variant")]
public sealed class UnknownVariantException(string message) : ArgumentException(message);

/// <summary>The variant, or the compact model a variant is asked of, exists but is not ready for the call. REST: 409.</summary>
[GenerateSerializer, Alias("fleet.not-ready")]
public sealed class NotReadyException(string message) : ArgumentException(message);

/// <summary>A replica cannot take the call now (its queue is full, or it is shutting down); the same call may succeed later. REST: 503.</summary>
[GenerateSerializer, Alias("fleet.busy")]
public sealed class ReplicaBusyException(string message) : InvalidOperationException(message);
