// swift-tools-version:6.0
import PackageDescription


let package = Package(
    name: "Switchboard",
    platforms: [.macOS(.v15), .iOS(.v18)],
    products: [
        .executable(name: "switchboard", targets: ["switchboard"]),
        .library(name: "SwitchboardProtocol", targets: ["SwitchboardProtocol"]),
        // The SDK: worker and client roles (docs/sdk.md).
        .library(name: "Switchboard", targets: ["Switchboard"]),
        .executable(name: "switchboard-example", targets: ["switchboard-example"]),
        .executable(name: "switchboard-autobahn-client", targets: ["switchboard-autobahn-client"]),
        // The reference client: the client role in headless Chromium over CDP.
        .executable(name: "switchboard-browser", targets: ["switchboard-browser"]),
    ],
    dependencies: [
        // The standard command-line parser for Swift; used only by the executable target.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CSystem"),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        // The session store of several nodes (docs/scaling.md).
        .systemLibrary(name: "CPostgreSQL", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        // Gathers the appends to SQLite's WAL into one write per commit (wal_vfs.c).
        .target(name: "CSQLiteWAL", dependencies: ["CSQLite"]),
        .target(name: "SwitchboardProtocol"),
        .target(name: "WebSocketCore", dependencies: ["CZlib", "COpenSSL"]),
        .target(name: "SocketServer", dependencies: ["WebSocketCore", "COpenSSL", "CSystem"]),
        .target(name: "SwitchboardServer", dependencies: ["SwitchboardProtocol", "SocketServer", "WebSocketCore", "COpenSSL", "CSQLite", "CSQLiteWAL", "CPostgreSQL"]),
        // The WebSocket and HTTP client transport of the SDK on Linux (Apple platforms use URLSession).
        .target(name: "WebSocketClient", dependencies: ["WebSocketCore", "SocketServer", "CSystem", "COpenSSL"]),
        .target(name: "Switchboard", dependencies: [
            "SwitchboardProtocol",
            .target(name: "WebSocketClient", condition: .when(platforms: [.linux])),
        ]),
        .target(name: "CDP", dependencies: ["SwitchboardProtocol", "WebSocketClient"]),
        .target(name: "SwitchboardBrowser", dependencies: ["CDP", "Switchboard", "SwitchboardProtocol"]),
        .executableTarget(name: "switchboard-browser", dependencies: ["CDP", "SwitchboardBrowser", "Switchboard"]),
        .executableTarget(name: "switchboard-example", dependencies: ["Switchboard", "SwitchboardProtocol"]),
        .executableTarget(name: "switchboard-autobahn-client", dependencies: ["WebSocketClient"]),
        .executableTarget(
            name: "switchboard",
            dependencies: [
                "SwitchboardServer", "SocketServer", "SwitchboardProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "SwitchboardProtocolTests", dependencies: ["SwitchboardProtocol"]),
        .testTarget(name: "WebSocketCoreTests", dependencies: ["WebSocketCore"]),
        .testTarget(name: "SocketServerTests", dependencies: ["SocketServer", "WebSocketCore"]),
        .testTarget(name: "SwitchboardSDKTests", dependencies: ["Switchboard", "SwitchboardProtocol", "WebSocketClient", "WebSocketCore"]),
        .testTarget(name: "SwitchboardBrowserTests", dependencies: ["SwitchboardBrowser", "CDP", "Switchboard", "SwitchboardProtocol"]),
        // Counts the heap allocations of one thread (the allocation tests of the relay's hot path).
        .target(name: "CAllocationCounter", path: "Tests/CAllocationCounter"),
        .testTarget(name: "SwitchboardServerTests", dependencies: ["SwitchboardServer", "SwitchboardProtocol", "SocketServer", "WebSocketCore",
                                                                   "CAllocationCounter"]),
    ],
    swiftLanguageModes: [.v6]
)
