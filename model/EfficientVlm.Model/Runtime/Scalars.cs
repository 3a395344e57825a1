using System.Collections.Concurrent;
using TorchSharp;

namespace EfficientVlm.Model.Runtime;

/// <summary>
/// Scalars held for the life of the process, for the constants of the model's every-step arithmetic.
/// TorchSharp hands a Scalar's native handle to libtorch without keeping the Scalar alive, so a temporary one
/// (an implicit conversion, or the alpha that <c>Tensor.add(Tensor)</c> makes for itself) can be finalised by a
/// GC on another thread during the native call: "Unknown scalar type" from c10's Scalar.h (docs/platform.md).
/// Passing these, with every add and sub given its alpha, closes that window at our call sites.
/// Only for constants: each distinct value is kept forever.
/// </summary>
public static class Scalars
{
    private static readonly ConcurrentDictionary<double, Scalar> Held = new();

    public static readonly Scalar One = Of(1.0);

    /// <summary>The alpha of a subtraction: <c>a.add(b, MinusOne)</c> is a - b (Tensor.sub takes no alpha).</summary>
    public static readonly Scalar MinusOne = Of(-1.0);

    /// <summary>The held Scalar of <paramref name="value"/> (a double; for float tensors).</summary>
    public static Scalar Of(double value) => Held.GetOrAdd(value, v => v);
}
