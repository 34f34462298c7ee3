fn main() {
    std::process::exit(recovery::cli::main());
}
