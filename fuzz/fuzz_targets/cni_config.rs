//! The CNI plugin's input: the environment's `CNI_ARGS` (the first line of the input) and the
//! network configuration on stdin (the rest), for every verb. Whatever arrives, parsing answers
//! with a command or a spec error: it never panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (args, stdin) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let args = String::from_utf8_lossy(args).into_owned();
    for command in ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"] {
        let env = |name: &str| match name {
            "CNI_COMMAND" => Some(command.to_owned()),
            "CNI_CONTAINERID" => Some("c0ffee".to_owned()),
            "CNI_NETNS" => Some("/run/netns/fuzz".to_owned()),
            "CNI_IFNAME" => Some("eth0".to_owned()),
            "CNI_ARGS" => Some(args.clone()),
            "CNI_PATH" => Some("/opt/cni/bin".to_owned()),
            _ => None,
        };
        let _ = weir_cni::skel::parse(&env, stdin);
    }
    let _ = weir_cni::skel::peek(stdin);
    let _ = weir_cni::read_config(stdin);
});
