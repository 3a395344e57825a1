using EfficientVlm.Bench;

// Redirected output (logs, docs) gets full-width tables instead of wrapped cells.
if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 200;
var name = args.FirstOrDefault() ?? "help";
return name switch
{
    "executor" => await ExecutorBench.RunAsync(args.Skip(1).ToArray()),
    "model-latency" => ModelLatencyBench.Run(args.Skip(1).ToArray()),
    "train-step" => TrainStepBench.Run(args.Skip(1).ToArray()),
    "task-latency" => TaskLatencyBench.Run(args.Skip(1).ToArray()),
    "pruning-plot" => PruningPlot.Run(args.Skip(1).ToArray()),
    "stem-widths" => StemWidthBench.Run(args.Skip(1).ToArray()),
    "serving-executor" => await ServingExecutorBench.RunAsync(args.Skip(1).ToArray()),
    _ => Usage(),
};

static int Usage()
{
    Console.WriteLine("usage: dotnet run --project bench/EfficientVlm.Bench -c Release -- <benchmark> [options]");
    Console.WriteLine("  executor [--items N] [--threads T]   device-executor overhead: direct calls vs executor, sequential and concurrent");
    Console.WriteLine("  model-latency [--threads T] [--no-paper]   teacher vs student forward latency, batch 1 and 32 (demo and paper presets)");
    Console.WriteLine("  model-latency --checkpoints A,B,...        the same for trained checkpoints (speed-up against the first)");
    Console.WriteLine("  task-latency --models TEACHER,VARIANT,... --data DIR [--split test] [--batches 1,32] [--repeats 30] [--warmup 3] [--threads T]");
    Console.WriteLine("                                             a task's serving call on real records, teacher and variants side by side (VQA, NLVR2, captioning)");
    Console.WriteLine("  pruning-plot --runs DIR --out PREFIX [--teacher-scores models/shapesworld/scores.json]");
    Console.WriteLine("                                             test score against target sparsity, modal-adaptive vs uniform, one SVG per task");
    Console.WriteLine("  stem-widths [--widths 16-32-64,8-16-32,...] [--batch 2] [--repeats 300] [--threads 1]");
    Console.WriteLine("                                             the conv stem's forward time at several inner widths, interleaved (docs/stem-pruning-plan.md)");
    Console.WriteLine("  train-step [--presets a,b] [--steps N] [--batch B] [--threads T]   VQA training-step time side by side (demo-teacher vs cpu-teacher)");
    Console.WriteLine("  serving-executor --bundle DIR --images DIR [--batches 1,2,...] [--seconds S] [--threads T] [--cpus 0,..]");
    Console.WriteLine("                                             the serving ceiling: a VQA bundle's answers/s per batch size, straight on the executor");
    Console.WriteLine("  (through the SDK: scripts/bench-serving.sh, which drives `fleet load` against a silo with and without batching)");
    return 2;
}
