import Testing
@testable import TensorKernels
