namespace EfficientVlm.Model.Metrics;

/// <summary>
/// Plain accuracy: the fraction of predictions equal to their labels. NLVR2 is scored this way (each example is a
/// True/False statement about an image pair; dev and test-P accuracy are the fractions answered correctly).
/// </summary>
public static class ClassificationAccuracy
{
    /// <summary>NLVR2 accuracy: the fraction of True/False predictions that equal the labels, in [0, 1].</summary>
    /// <param name="predictions">The predicted truth values.</param>
    /// <param name="labels">The gold truth values, in the same order.</param>
    /// <returns>The accuracy.</returns>
    public static double Accuracy(IReadOnlyList<bool> predictions, IReadOnlyList<bool> labels) =>
        Accuracy<bool>(predictions, labels);

    /// <summary>The fraction of predicted classes that equal the labels, in [0, 1].</summary>
    /// <typeparam name="T">The class type (for instance an int class index).</typeparam>
    /// <param name="predictions">The predicted classes.</param>
    /// <param name="labels">The gold classes, in the same order.</param>
    /// <returns>The accuracy.</returns>
    public static double Accuracy<T>(IReadOnlyList<T> predictions, IReadOnlyList<T> labels)
        where T : IEquatable<T>
    {
        ArgumentNullException.ThrowIfNull(predictions);
        ArgumentNullException.ThrowIfNull(labels);
        if (predictions.Count != labels.Count)
        {
            throw new ArgumentException(
                $"There are {predictions.Count} predictions but {labels.Count} labels.", nameof(predictions));
        }

        if (predictions.Count == 0)
        {
            throw new ArgumentException("At least one example is needed.", nameof(predictions));
        }

        var correct = 0;
        for (var i = 0; i < predictions.Count; i++)
        {
            if (EqualityComparer<T>.Default.Equals(predictions[i], labels[i]))
            {
                correct++;
            }
        }

        return (double)correct / predictions.Count;
    }
}
