import ArgumentParser

@main
struct TSwitch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tswitch",
        abstract: "Store, merge and switch the task knowledge of fine-tuned models.",
        subcommands: [
            InspectCommand.self,
        ])
}
