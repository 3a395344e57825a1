using Prometheus;

namespace EfficientVlm.Grains.Serving;

/// <summary>The serving metrics each silo exports at <c>/metrics</c> (Prometheus text format), labelled by variant.</summary>
public static class FleetMetrics
{
    public static readonly Counter Requests = Metrics.CreateCounter("fleet_requests_total",
        "Calls answered by this silo's replicas, by outcome (ok, bad_input, error).", "variant", "task", "outcome");

    public static readonly Histogram Latency = Metrics.CreateHistogram("fleet_request_seconds",
        "Time from a call's arrival at its replica to its answer (queue + batch).", new HistogramConfiguration
        {
            LabelNames = ["variant"],
            Buckets = Histogram.ExponentialBuckets(0.001, 2, 16),
        });

    public static readonly Histogram BatchSize = Metrics.CreateHistogram("fleet_batch_size",
        "Requests per executor call.", new HistogramConfiguration { LabelNames = ["variant"], Buckets = [1, 2, 4, 8, 16, 32, 64, 128] });

    public static readonly Histogram QueueDelay = Metrics.CreateHistogram("fleet_queue_delay_seconds",
        "Time a request waited for its batch to start.", new HistogramConfiguration
        {
            LabelNames = ["variant"],
            Buckets = Histogram.ExponentialBuckets(0.0005, 2, 14),
        });

    public static readonly Histogram ModelLoad = Metrics.CreateHistogram("fleet_model_load_seconds",
        "Download (first time on this silo) and load of a serving model.", new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.05, 2, 10) });

    public static readonly Gauge CacheBytes = Metrics.CreateGauge("fleet_model_cache_bytes", "Bytes of weights loaded in this silo's model cache.");

    public static readonly Counter Evictions = Metrics.CreateCounter("fleet_model_evictions_total", "Models evicted from this silo's cache.");

    public static readonly Gauge DiskCacheBytes = Metrics.CreateGauge("fleet_disk_cache_bytes",
        "Bytes of downloaded datasets, models and galleries in this silo's work folder cache (after the last trim).");

    public static readonly Counter DiskEvictions = Metrics.CreateCounter("fleet_disk_evictions_total",
        "Folders deleted from this silo's disk cache to stay within Fleet:Jobs:DiskCacheBudgetBytes.");
}
