import ArgumentParser

@main
struct TSwitch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tswitch",
        abstract: "Store, merge and switch the task knowledge of fine-tuned models.",
        subcommands: [
            InspectCommand.self,
            DiffCommand.self,
            ConvertCommand.self,
            EmbedCommand.self,
            EvalCommand.self,
            HeadCommand.self,
            PackCommand.self,
            ApplyCommand.self,
            AnalyzeCommand.self,
            RouteCommand.self,
            MergeCommand.self,
        ])
}
