// swift-tools-version:5.9
// Swift package for the Homeroom bindings. Layout (filled by build-xcframework.sh):
//   homeroom_mobileFFI.xcframework/          the Rust static library + C header per platform
//     (named like the module the generated Swift imports, `homeroom_mobileFFI`, and like the
//     binary target below: SwiftPM matches a binary target to its artifact by name)
//   Sources/Homeroom/homeroom_mobile.swift   the generated Swift bindings
// NOT built here (no Swift compiler or Xcode on this machine): see ../../docs/mobile.md.
import PackageDescription

let package = Package(
    name: "Homeroom",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "Homeroom", targets: ["Homeroom"]),
    ],
    targets: [
        // The generated bindings import the module `homeroom_mobileFFI`, which the
        // XCFramework provides (headers + module.modulemap inside each slice).
        .binaryTarget(name: "homeroom_mobileFFI", path: "homeroom_mobileFFI.xcframework"),
        .target(
            name: "Homeroom",
            dependencies: ["homeroom_mobileFFI"],
            path: "Sources/Homeroom"
        ),
    ]
)
