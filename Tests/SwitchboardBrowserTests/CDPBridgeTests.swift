import Testing
@testable import SwitchboardBrowser
import SwitchboardProtocol

/// The reference client refuses to close the page its commands run in; everything else passes.
@Suite struct CDPBridgeTests {
    @Test func closingTheSessionPageIsRefused() throws {
        let frame = #"{"id":4,"method":"Target.closeTarget","params":{"targetId":"T1"},"sessionId":"S"}"#
        let answer = try JSONParser.parse(Array(try #require(CDPBridge.refusal(frame, protectedTarget: "T1")).utf8))
        #expect(answer["id"]?.intValue == 4 && answer["sessionId"]?.stringValue == "S" && answer["error"]?["code"]?.intValue == -32000)
    }

    @Test(arguments: [
        #"{"id":4,"method":"Target.closeTarget","params":{"targetId":"T2"}}"#,
        #"{"id":4,"method":"Target.getTargets","params":{"note":"Target.closeTarget T1"}}"#,
        #"{"id":4,"method":"Page.navigate","params":{"url":"x"}}"#,
        "not json but Target.closeTarget",
    ])
    func otherFramesPass(frame: String) {
        #expect(CDPBridge.refusal(frame, protectedTarget: "T1") == nil)
    }
}
