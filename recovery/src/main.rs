fn main() {
    engine::alloc_tune::settle();
    engine::fsops::reserve_descriptors();
    std::process::exit(recovery::cli::main());
}
