using System.CommandLine;
using EfficientVlm.Tool;

var root = new RootCommand("vlm: offline EfficientVLM work (vocabularies; data, training and pruning as they land)");
root.Subcommands.Add(DataCommand.Create());
root.Subcommands.Add(TrainCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(ProbeCommand.Create());
root.Subcommands.Add(PruneCommand.Create());
root.Subcommands.Add(VocabCommand.Create());
root.Subcommands.Add(ModelCommand.Create());
return await root.Parse(args).InvokeAsync();
