fn main() {
    engine::alloc_tune::settle();
    std::process::exit(oneway::cli::main());
}
