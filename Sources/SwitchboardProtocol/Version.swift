public enum SwitchboardProtocolVersion { public static let current = 1 }
