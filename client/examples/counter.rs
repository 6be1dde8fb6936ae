//! A small app on the ringleader client: several tasks increment one shared counter with
//! compare-and-swap on its version, retrying on conflict, so no increment is lost.
//!
//! Start a cluster (`cargo run --release -p ringleader -- cluster up`), then:
//!
//! ```text
//! cargo run -p ringleader-client --example counter -- 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
//! ```

use ringleader_client::{CasOutcome, Client, ClientConfig, Expect};

const TASKS: u64 = 4;
const INCREMENTS_PER_TASK: u64 = 25;

async fn increment(client: &Client, key: &str) -> Result<u64, ringleader_client::Error> {
    loop {
        let (current, expect) = match client.get(key).await? {
            Some(found) => {
                let number = String::from_utf8_lossy(&found.value)
                    .parse::<u64>()
                    .unwrap_or(0);
                (number, Expect::Version(found.version))
            }
            None => (0, Expect::Absent),
        };
        match client.cas(key, expect, (current + 1).to_string()).await? {
            CasOutcome::Swapped { .. } => return Ok(current + 1),
            CasOutcome::Mismatch { .. } => continue, // someone else incremented first: retry
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003".into());
    let client = Client::new(ClientConfig::new(
        endpoints.split(',').map(String::from).collect(),
    ))?;
    let key = format!("counter-{}", std::process::id());
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (client, key) = (client.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS_PER_TASK {
                increment(&client, &key).await?;
            }
            Ok::<_, ringleader_client::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let total = client
        .get(key.as_str())
        .await?
        .map(|v| String::from_utf8_lossy(&v.value).into_owned());
    println!(
        "{key} = {} (expected {})",
        total.unwrap_or_default(),
        TASKS * INCREMENTS_PER_TASK
    );
    Ok(())
}
