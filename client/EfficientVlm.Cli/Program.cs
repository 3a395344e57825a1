using System.CommandLine;
using EfficientVlm.Cli;

var root = new RootCommand("fleet: the EfficientVlm.Fleet command-line tool");
root.Options.Add(CliConnection.ClusterOption);
root.Options.Add(CliConnection.StorageOption);
root.Subcommands.Add(ProbeCommand.Create());
root.Subcommands.Add(DataCommand.Create());
root.Subcommands.Add(ModelsCommand.Create());
root.Subcommands.Add(VariantsCommand.Create());
return await root.Parse(args).InvokeAsync();
