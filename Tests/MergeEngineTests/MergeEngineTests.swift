import Testing
@testable import MergeEngine
