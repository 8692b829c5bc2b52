import Testing
@testable import CheckpointIO
