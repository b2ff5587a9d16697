use clap::Parser;
use config::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let _telemetry = distlab_platform::telemetry::init("config");
    let app = Application::build(settings).await?;
    distlab_platform::http::cancel_on_signal(app.shutdown_token());
    tracing::info!(addr = %app.local_addr()?, node = app.node().id, "config node listening");
    app.run_until_stopped().await
}
