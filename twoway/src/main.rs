fn main() {
    eprintln!("twoway: two-way sync is not built yet; use oneway for a mirror (see README)");
    std::process::exit(2);
}
