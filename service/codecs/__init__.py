"""The protocols' wire formats, side by side: each turns a request body into the data plane's
protocol-neutral inputs and a forward's result into that protocol's answer. No HTTP here."""
