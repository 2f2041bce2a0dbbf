// The Homeroom bindings as an Android library module. NOT built here (no Android SDK/NDK on
// this machine): see ../README.md.
//
// Contents, written by ../generate.sh (both gitignored):
//   src/main/java/uniffi/homeroom_mobile/homeroom_mobile.kt  generated Kotlin (package
//                                                            uniffi.homeroom_mobile)
//   src/main/jniLibs/<abi>/libhomeroom_mobile.so             the Rust library per ABI
//                                                            (arm64-v8a, armeabi-v7a, x86_64)
// Both are this module's default source sets, so nothing below points at them.
//
// In the app's settings.gradle.kts:
//   include(":homeroom")
//   project(":homeroom").projectDir = file("<path to>/mobile-bindings/android/homeroom")
// and in the app module: dependencies { implementation(project(":homeroom")) }.
// Plugin versions come from the app's root build (this module declares none).
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.homeroom.bindings"
    compileSdk = 34

    defaultConfig {
        minSdk = 24 // the -P of cargo ndk in ../generate.sh
        consumerProguardFiles("consumer-rules.pro")
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
}

dependencies {
    // JNA loads libhomeroom_mobile.so; the @aar carries libjnidispatch.so for every ABI (the
    // plain jar has none for Android). `api`: the generated public classes extend JNA types
    // (e.g. RustBuffer : com.sun.jna.Structure), so the app compiles against JNA too.
    api("net.java.dev.jna:jna:5.13.0@aar")
}
