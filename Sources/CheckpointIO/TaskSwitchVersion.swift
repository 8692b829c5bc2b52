/// The version of the TaskSwitch tools and libraries, as `tswitch --version` prints it.
public enum TaskSwitchVersion {
    public static let string = "0.1.0"
}
