import Testing
@testable import TaskSwitches
