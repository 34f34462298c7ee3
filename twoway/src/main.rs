fn main() {
    engine::alloc_tune::settle();
    std::process::exit(twoway::cli::main());
}
