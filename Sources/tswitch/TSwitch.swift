import ArgumentParser
import CheckpointIO

@main
struct TSwitch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tswitch",
        abstract: "Store, merge and switch the task knowledge of fine-tuned models.",
        version: TaskSwitchVersion.string,
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
            MoECommand.self,
            ExtractLoRACommand.self,
            ServeCommand.self,
        ])

    /// ArgumentParser's `main()`, with the flag hint added to a library error (`FlagHint`), under the allocator
    /// policy of `MemoryPolicy`.
    static func main() {
        MemoryPolicy.keepFreedHeap()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: FlagHint.adding(to: error))
        }
    }
}
