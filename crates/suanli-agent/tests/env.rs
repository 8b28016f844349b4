//! The job's environment is rebuilt from scratch: nothing of the agent's leaks. In its own test
//! binary so that setting the parent's environment races with no other test.

mod common;

use common::*;
use suanli_agent::local::{JobLaunch, JobState, UseBubblewrap};

#[tokio::test]
async fn job_environment_holds_only_what_it_should() {
    // What an agent's environment could hold; none of it may reach a job.
    std::env::set_var("SUANLI_TOKEN", "sk-agent-secret");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "also-secret");
    for mode in [UseBubblewrap::Always, UseBubblewrap::Never] {
        let b = backend(&format!("env-{mode:?}"), mode);
        let mut spec = JobLaunch::new("env-1", "env");
        spec.env.insert("MODEL".into(), "llama".into());
        spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
        let job = b.start(spec).await.unwrap();
        let dir = job.work_dir();
        let (outcome, logs) = finish(job).await;
        assert_eq!(outcome.state, JobState::Succeeded, "{logs:?}");
        assert!(!logs.stdout.contains("secret"), "{}", logs.stdout);
        let mut vars: Vec<(String, String)> = logs
            .stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        vars.sort();
        let d = dir.display().to_string();
        let expected = [
            ("HOME", d.clone()),
            ("LANG", "C.UTF-8".into()),
            ("MODEL", "llama".into()),
            ("PATH", "/usr/bin:/bin".into()),
            ("PWD", d.clone()),
            ("SUANLI_ATTEMPT_ID", "env-1".into()),
            ("SUANLI_JOB_DIR", d.clone()),
            ("TMPDIR", format!("{d}/.tmp")),
        ];
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(vars, expected, "{mode:?}");
    }
}
