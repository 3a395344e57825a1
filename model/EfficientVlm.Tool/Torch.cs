using System.CommandLine;
using EfficientVlm.Model.Runtime;

namespace EfficientVlm.Tool;

/// <summary>The <c>--threads</c> option every torch command takes, and the device executor it starts.</summary>
internal static class Torch
{
    public static readonly Option<int> Threads = new Option<int>("--threads")
    {
        Description = "libtorch threads",
        DefaultValueFactory = _ => Environment.ProcessorCount,
    }.AtLeastOne();

    /// <summary>The executor all of a command's tensor work runs on (the best device there is).</summary>
    public static DeviceExecutor Executor(ParseResult parse) =>
        new(new DeviceExecutorOptions { Device = "auto", TorchThreads = parse.GetValue(Threads) });
}
