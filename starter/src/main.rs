fn main() {
    eprintln!("FATAL:   strata-starter is not implemented yet");
    std::process::exit(255);
}
