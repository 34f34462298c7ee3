fn main() {
    std::process::exit(twoway::cli::main());
}
