using System.CommandLine;
using EfficientVlm.Cli;
using Spectre.Console;

// Logs and pipes get whole table rows instead of rows wrapped at 80 columns.
if (Console.IsOutputRedirected) AnsiConsole.Profile.Width = 160;

var root = new RootCommand("fleet: the EfficientVlm.Fleet command-line tool");
root.Options.Add(CliConnection.ClusterOption);
root.Options.Add(CliConnection.StorageOption);
root.Subcommands.Add(ProbeCommand.Create());
root.Subcommands.Add(DataCommand.Create());
root.Subcommands.Add(DataCommand.Gallery());
root.Subcommands.Add(ModelsCommand.Create());
root.Subcommands.Add(VariantsCommand.Create());
root.Subcommands.Add(AliasesCommand.Create());
root.Subcommands.Add(LoadCommand.Create());
foreach (var command in ServeCommands.Create()) root.Subcommands.Add(command);
return await root.Parse(args).InvokeAsync();
