using System.Collections;
using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;

namespace EfficientVlm.Model.Data.Pipeline;

/// <summary>
/// Runs a producer (decoding, tokenising, collating) on a background thread, at most
/// <c>capacity</c> items ahead of the consumer, so a training loop never waits on input work it
/// could have overlapped. Order is kept; a producer exception is rethrown to the consumer; disposing
/// the enumerator stops the producer.
/// </summary>
public sealed class Prefetcher<T>(Func<CancellationToken, IEnumerable<T>> source, int capacity = 4) : IEnumerable<T>
{
    public IEnumerator<T> GetEnumerator() => Enumerate().GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    private IEnumerable<T> Enumerate()
    {
        using var queue = new BlockingCollection<T>(Math.Max(1, capacity));
        using var stop = new CancellationTokenSource();
        ExceptionDispatchInfo? failure = null;
        var producer = new Thread(() =>
        {
            try
            {
                foreach (var item in source(stop.Token))
                {
                    queue.Add(item, stop.Token);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                // the consumer stopped early
            }
            catch (Exception e)
            {
                failure = ExceptionDispatchInfo.Capture(e);
            }
            finally
            {
                queue.CompleteAdding();
            }
        })
        {
            IsBackground = true,
            Name = "prefetcher",
        };
        producer.Start();
        try
        {
            foreach (var item in queue.GetConsumingEnumerable())
                yield return item;
            producer.Join();
            failure?.Throw();
        }
        finally
        {
            stop.Cancel();
            producer.Join();
        }
    }
}
