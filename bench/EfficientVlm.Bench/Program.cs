using EfficientVlm.Bench;

var name = args.FirstOrDefault() ?? "help";
return name switch
{
    "executor" => await ExecutorBench.RunAsync(args.Skip(1).ToArray()),
    _ => Usage(),
};

static int Usage()
{
    Console.WriteLine("usage: dotnet run --project bench/EfficientVlm.Bench -c Release -- <benchmark> [options]");
    Console.WriteLine("  executor [--items N] [--threads T]   device-executor overhead: direct calls vs executor, sequential and concurrent");
    return 2;
}
