fn main() {
    engine::alloc_tune::settle();
    std::process::exit(recovery::cli::main());
}
