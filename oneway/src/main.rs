fn main() {
    std::process::exit(oneway::cli::main());
}
